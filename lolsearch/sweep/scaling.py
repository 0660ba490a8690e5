"""The sweep-scaling measurement behind ``python -m lolsearch.perf scaling``: the same space swept per (GPUs, trials
per GPU), each sweep its own ``lolsearch sweep`` process, timed from the outside."""

from __future__ import annotations

import json
import logging
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lolsearch.config import load_yaml

log = logging.getLogger(__name__)


def warm_baselines(space_path: Path) -> None:
    """Fills the teacher-baseline cache for every baseline the space's planned trials need."""
    import torch

    from lolsearch.search.space import load_space
    from lolsearch.trial.baselines import distinct_baselines, ensure_baselines

    for cfg in distinct_baselines(load_space(space_path).plan(), torch.device("cpu")):
        ensure_baselines(cfg)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def scaling_rows(space_path: Path, gpus: list[int], trials_per_gpu: list[int], work: Path) -> list[dict]:
    """One row per (trials per GPU, GPUs): the sweep's wall time, its ok trials and their median time.

    ``k`` trials per GPU sweeps a copy of the space under ``work`` with ``resources.gpu = 1/k`` (and ``cpu``
    divided by k, at least 1). The teacher baselines are computed (or read from the cache) before the first timed
    sweep, so every timed sweep reads them and the times measure the scheduling and the trials alone."""
    warm_baselines(space_path)
    space = load_yaml(space_path)
    rows = []
    for per_gpu in trials_per_gpu:
        res = dict(space.get("resources") or {})
        res["gpu"] = 1 / per_gpu
        res["cpu"] = max(1.0, float(res.get("cpu", 1.0)) / per_gpu)
        path = Path(work) / f"{Path(space_path).stem}-per-gpu{per_gpu}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({**space, "resources": res}, sort_keys=False))
        for n in gpus:
            out = Path(work) / f"gpus{n}-per-gpu{per_gpu}"
            cmd = [sys.executable, "-m", "lolsearch", "sweep", str(path), "--out", str(out), "--gpus", str(n), "--yes"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            records = [json.loads(p.read_text()) for p in out.glob("trials/*/result.json")]
            ok = [r for r in records if r["status"] == "ok"]
            trial_s = [r["timing"]["total_s"] for r in ok if "total_s" in (r.get("timing") or {})]
            rows.append({"gpus": n, "trials_per_gpu": per_gpu, "wall_s": wall, "trials_ok": len(ok),
                         "returncode": proc.returncode, "command": shlex.join(cmd),
                         "trial_s_median": statistics.median(trial_s) if trial_s else float("nan")})
            if proc.returncode:
                log.error("sweep failed: %s", proc.stderr[-2000:])
    return rows
