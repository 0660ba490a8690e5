"""No-grad forwards of an evaluation pass replayed from a CUDA graph (``eval.cuda_graph``).

An evaluation pass runs the same forward (the student, the teacher under ``teacher_mode``, a reference model, the
decoder under ``distill_mode``) over batches of one shape. Eagerly, each forward is thousands of kernel launches and
Python calls, and for a small model that host work, not the GPU, sets the pass's time. :class:`GraphedForward`
runs the first batch eagerly on a side stream (Triton compiles and autotunes there, outside any capture), records
the second into a CUDA graph with a static input buffer, and replays the graph for every later batch of that shape.
A batch of another shape (the short last batch of a capped pass) runs eagerly; a forward that cannot be captured
makes the rest of the pass eager, with one log line. The graph and its memory pool live as long as the object, one
pass: nothing that a capture baked in (the weights' addresses, the attention modes) changes within a pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]


def graph_wanted(setting: bool | Literal["auto"], device: torch.device) -> bool:
    """Whether an evaluation pass on ``device`` replays its forwards from CUDA graphs (``auto``: on a GPU)."""
    return device.type == "cuda" and setting in (True, "auto")


class GraphedForward:
    """``fn(ids) -> Tensor`` (``ids [B, T]`` int64 on ``device``), replayed from a CUDA graph after a warm-up call.

    The tensor returned by a replay is the graph's static output, overwritten by the next call: read it (or queue
    work that reads it, as the evaluation passes do) before calling again. With ``enabled`` False, or off CUDA,
    every call is ``fn(ids)``.
    """

    def __init__(self, name: str, fn: Forward, device: torch.device, enabled: bool = True) -> None:
        self.name, self.fn = name, fn
        self.enabled = enabled and device.type == "cuda"
        self.stream = torch.cuda.Stream(device=device) if self.enabled else None
        self.warmed = False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.ids: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self.replays = 0

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.fn(ids)
        if self.graph is not None:
            if ids.shape != self.ids.shape or ids.dtype != self.ids.dtype:
                return self.fn(ids)
            self.ids.copy_(ids, non_blocking=True)
            self.graph.replay()
            self.replays += 1
            return self.out
        if not self.warmed:
            return self._warm_up(ids)
        return self._capture(ids)

    def close(self) -> None:
        """Frees the graph, its static buffers and its memory pool; later calls run eagerly."""
        self.graph, self.ids, self.out, self.enabled = None, None, None, False

    def _warm_up(self, ids: torch.Tensor) -> torch.Tensor:
        main = torch.cuda.current_stream(ids.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            out = self.fn(ids)
        main.wait_stream(self.stream)
        self.warmed = True
        return out

    def _capture(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = ids.clone()
        graph, main = torch.cuda.CUDAGraph(), torch.cuda.current_stream(ids.device)
        self.stream.wait_stream(main)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                out = self.fn(self.ids)
        except Exception as err:  # noqa: BLE001 - a forward that cannot be captured runs eagerly, the pass goes on
            torch.cuda.set_stream(main)  # a failed capture_end leaves the capture stream current
            torch.cuda.synchronize(ids.device)
            log.warning("%s: eval cuda_graph off for this pass (capture failed: %s: %s); running eager forwards",
                        self.name, type(err).__name__, str(err).strip().splitlines()[0][:200])
            self.close()
            return self.fn(ids)
        self.graph, self.out = graph, out
        graph.replay()
        self.replays += 1
        return out
