"""The Ray trainable of a sweep and the per-trial records it leaves in ``DIR/trials/<trial_id>/``.

Only plain JSON travels through Ray: ``config = {"_sweep": SweepContext.to_ray(), "_point": PointRef.to_ray()}``,
parsed back into typed objects once, at the start of the worker.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lolsearch.config import TrialConfig
from lolsearch.search.points import PointRef
from lolsearch.sweep.integrations import TrialEvents
from lolsearch.trial.record import read_final, static_record, write_result

log = logging.getLogger(__name__)
# Our own key in Tune results ("trial_id" is Tune's).
TRIAL_KEY = "lol_trial_id"


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep shares: the output folder, the space's name and a trial's resources."""

    out: str
    space: str
    cpu: float
    gpu: float

    def to_ray(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_ray(cls, data: dict[str, Any]) -> SweepContext:
        return cls(**{k: data[k] for k in ("out", "space", "cpu", "gpu")})


def sweep_trainable(config: dict[str, Any]) -> None:
    """Function trainable: one point -> one record; reports intermediate metrics and the final record."""
    from ray import tune

    ctx, ref = SweepContext.from_ray(config["_sweep"]), PointRef.from_ray(config["_point"])
    limit_process(ctx.cpu, ctx.gpu)
    identity = ref.identity(ctx.space)
    trial_id = identity[0]

    events = TrialEvents(Path(ctx.out), trial_id)  # TensorBoard: DIR/tb/<trial_id>

    def forward(metrics: dict) -> None:
        events(metrics)
        tune.report({**_scalars(metrics), TRIAL_KEY: trial_id})

    try:
        record = trial_record(ref, Path(ctx.out), ctx.space, report=forward, identity=identity)
        events.final(record.get("metrics") or {})
    finally:
        events.close()
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


def trial_record(ref: PointRef, out: Path, space: str, report: Any = None,
                 identity: tuple[str, TrialConfig | None, str | None] | None = None) -> dict[str, Any]:
    """The final record of a point: from disk when a final one exists, else computed by ``run_trial``.
    ``identity`` is ``ref.identity(space)`` when the caller has it already."""
    trial_id, cfg, problem = identity or ref.identity(space)
    trial_dir = out / "trials" / trial_id
    cached = read_final(trial_dir)
    if cached is not None:
        log.info("trial %s already has a %s record; not recomputed", trial_id, cached["status"])
        return cached
    if ref.pruned or problem:
        status = "pruned" if ref.pruned else "failed"
        record = static_record(trial_id, space, cfg, ref.config, status, ref.pruned or problem)
        write_result(trial_dir, record)
        return record
    from lolsearch.trial.run import run_trial

    try:
        result = run_trial(cfg, trial_dir, space=space, report=report, block=ref.block)
    except Exception as err:  # run_trial never raises by contract; a bug there must not stop the sweep
        record = static_record(trial_id, space, cfg, ref.config, "failed", f"{type(err).__name__}: {err}")
        write_result(trial_dir, record)
        return record
    return read_final(trial_dir) or result.to_dict()


def final_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The last Tune report of a trial: identity, status and every scalar metric."""
    out = _scalars(record.get("metrics") or {})
    out.update({TRIAL_KEY: record["trial_id"], "status": record["status"], "error": record.get("error") or ""})
    if "total_s" in (record.get("timing") or {}):
        out["trial_total_s"] = record["timing"]["total_s"]
    return out


def _scalars(d: dict) -> dict[str, Any]:
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) and not k.startswith("_")}


def trial_dirname(trial: Any) -> str:
    """Short Ray trial folder names (the default embeds the whole config)."""
    return f"trial_{trial.trial_id}"
