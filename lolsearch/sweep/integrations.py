"""What a sweep hands to the tools its users already have: TensorBoard events per trial under its trial_id
(``DIR/tb/<trial_id>``, so ``tensorboard --logdir DIR/tb`` lists trials by the ids of ``trials/``, not by Ray's
names), and the Ray cluster's nodes and resources for ``sweep.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
TB_DIR = "tb"
_CURVES = ("loss", "eval_loss", "lr", "tok_s")


class TrialEvents:
    """TensorBoard events of one trial: ``<stage>/<loss|eval_loss|lr|tok_s>`` by step during training, then
    ``metrics/<name>`` of the final record. Uses tensorboardX (installed with ray[tune]); without it, nothing is
    written and one warning says why."""

    def __init__(self, sweep_dir: Path, trial_id: str) -> None:
        self.path = Path(sweep_dir) / TB_DIR / trial_id
        self._writer: Any = None
        self._off = False

    def _get(self) -> Any:
        if self._writer is None and not self._off:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                self._off = True
                log.warning("tensorboardX is not installed: no TensorBoard events in %s", self.path.parent)
                return None
            self.path.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.path), flush_secs=10)
        return self._writer

    def __call__(self, event: dict[str, Any]) -> None:
        stage, step = event.get("stage"), event.get("step")
        values = {k: event[k] for k in _CURVES if isinstance(event.get(k), (int, float))}
        if stage is None or step is None or not values:
            return
        writer = self._get()
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(f"{stage}/{k}", float(v), int(step))

    def final(self, metrics: dict[str, Any]) -> None:
        writer = self._get()
        if writer is not None:
            for k, v in sorted(metrics.items()):
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.add_scalar(f"metrics/{k}", float(v), 0)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def cluster_nodes() -> list[dict[str, Any]]:
    """The live nodes of the connected Ray cluster: host, address and resources (CPU, GPU, memory in GiB,
    accelerator type), for ``sweep.json``."""
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources") or {}
        accel = sorted(k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:"))
        nodes.append({
            "host": node.get("NodeManagerHostname"), "address": node.get("NodeManagerAddress"),
            "cpu": res.get("CPU", 0.0), "gpu": res.get("GPU", 0.0),
            "memory_gib": round(res.get("memory", 0.0) / 2**30, 1), "accelerators": accel,
        })
    return sorted(nodes, key=lambda n: (str(n["host"]), str(n["address"])))
