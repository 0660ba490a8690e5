"""The Ray trainable of a sweep and the per-trial records it leaves in ``DIR/trials/<trial_id>/``.

Only plain dicts travel through Ray: ``config = {"_sweep": {out, space, cpu, gpu}, "_point": Point.to_ray()}``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from lolsearch.config import TrialConfig, parse_trial_config
from lolsearch.errors import ConfigError

log = logging.getLogger(__name__)
FINAL_STATUSES = ("ok", "failed", "pruned")
# Our own key in Tune results ("trial_id" is Tune's).
TRIAL_KEY = "lol_trial_id"


def sweep_trainable(config: dict[str, Any]) -> None:
    """Function trainable: one point -> one record; reports intermediate metrics and the final record."""
    from ray import tune

    ctx, point = config["_sweep"], config["_point"]
    limit_process(ctx["cpu"], ctx["gpu"])
    trial_id = point_identity(point, ctx["space"])[0]

    def forward(metrics: dict) -> None:
        tune.report({**_scalars(metrics), TRIAL_KEY: trial_id})

    try:
        record = trial_record(point, Path(ctx["out"]), ctx["space"], report=forward)
    finally:
        _release_memory()  # the worker process is reused by the next trial
    tune.report(final_metrics(record))


def limit_process(cpu: float, gpu: float) -> None:
    """Threads from the CPU share; no GPU unless asked for; a shared GPU's memory capped to its fraction."""
    if gpu == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # a CPU trial must not land on a (busy) GPU
    import torch

    torch.set_num_threads(max(1, int(cpu)))
    if 0 < gpu < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(gpu, 0)


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def point_identity(point: dict[str, Any], space: str) -> tuple[str, TrialConfig | None, str | None]:
    """(trial_id, config or None, problem or None). An invalid point gets a hash of its raw dict."""
    try:
        cfg = parse_trial_config(point["trial"], f"space {space}")
    except ConfigError as err:
        raw = json.dumps(point["trial"], sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha1(raw.encode()).hexdigest()[:10], None, f"ConfigError: {err}".replace("\n", "; ")
    return cfg.trial_id, cfg, None


def trial_record(point: dict[str, Any], out: Path, space: str, report: Any = None) -> dict[str, Any]:
    """The final record of ``point``: from disk when a final one exists, else computed by ``run_trial``."""
    trial_id, cfg, problem = point_identity(point, space)
    path = out / "trials" / trial_id / "result.json"
    cached = read_record(path)
    if cached is not None and cached.get("status") in FINAL_STATUSES:
        log.info("trial %s already has a %s record; not recomputed", trial_id, cached["status"])
        return cached
    if point.get("pruned") or problem:
        status = "pruned" if point.get("pruned") else "failed"
        record = static_record(trial_id, space, cfg, point["trial"], status, point.get("pruned") or problem)
        write_json_atomic(path, record)
        return record
    from lolsearch.pipeline import run_trial

    try:
        result = run_trial(cfg, path.parent, space=space, report=report)
    except Exception as err:  # run_trial never raises by contract; a bug there must not stop the sweep
        record = static_record(trial_id, space, cfg, point["trial"], "failed", f"{type(err).__name__}: {err}")
        write_json_atomic(path, record)
        return record
    return read_record(path) or json.loads(result.to_json())


def static_record(trial_id: str, space: str, cfg: TrialConfig | None, raw: dict, status: str, error: str | None,
                  metrics: dict | None = None) -> dict[str, Any]:
    """A record for a trial that did not run to the end (pruned, invalid, crashed, stopped early)."""
    return {
        "trial_id": trial_id,
        "space": space,
        "config": cfg.model_dump(mode="json") if cfg is not None else raw,
        "status": status,
        "error": error,
        "metrics": metrics or {},
        "curves": {},
        "timing": {},
        "env": {},
    }


def final_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The last Tune report of a trial: identity, status and every scalar metric."""
    out = _scalars(record.get("metrics") or {})
    out.update({TRIAL_KEY: record["trial_id"], "status": record["status"], "error": record.get("error") or ""})
    if "total_s" in (record.get("timing") or {}):
        out["trial_total_s"] = record["timing"]["total_s"]
    return out


def _scalars(d: dict) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}


def read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_records(out: Path) -> list[dict[str, Any]]:
    """Every readable ``trials/*/result.json`` under a sweep folder, sorted by trial id."""
    records = [read_record(p) for p in sorted((out / "trials").glob("*/result.json"))]
    return [r for r in records if r is not None]


def objective_values(record: dict[str, Any], metrics: list[str]) -> list[float] | None:
    """The objectives of an ok record when all are finite numbers, else None."""
    m = record.get("metrics") or {}
    values = [m.get(k) for k in metrics]
    if record.get("status") != "ok" or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    return [float(v) for v in values]


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)


def trial_dirname(trial: Any) -> str:
    """Short Ray trial folder names (the default embeds the whole config)."""
    return f"trial_{trial.trial_id}"
