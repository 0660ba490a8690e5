"""``design_id``: what the replicates (seeds) of one design share — a hash of the resolved config without its seed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from lolsearch.config.trial import canonical


def design_hash(config: dict[str, Any]) -> str:
    """10 hex digits of the SHA-1 of ``config`` (a resolved config dict: ``json.loads(cfg.canonical_json())`` or a
    record's ``config``) in its :func:`~lolsearch.config.trial.canonical` form, without its ``seed``, as sorted
    compact JSON: a record's full config hashes as its trial's config does."""
    rest = {k: v for k, v in canonical(config).items() if k != "seed"}
    return hashlib.sha1(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]


def design_id(cfg: Any) -> str:
    """``design_id`` of a :class:`~lolsearch.config.TrialConfig` (speed-only settings excluded, as in its trial_id)."""
    return design_hash(json.loads(cfg.canonical_json()))
