"""Runs ``python -m lolsearch.perf`` with distill_mode's early stop on (the code as committed) or off (the whole
decoder stack, as before 2026-12-06's tenth session), for side-by-side rows on one machine:

    python3 results/perf/at_stop_20261206/variant.py {on,off} <perf arguments>
"""

from __future__ import annotations

import contextlib
import sys

from lolsearch import perf
from lolsearch.trial import surgery

if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "off":
        surgery._up_to_last_attention = lambda *_: contextlib.nullcontext()
    elif mode != "on":
        sys.exit(f"variant.py: the first argument is on or off, not {mode!r}")
    sys.exit(perf.main(args))
