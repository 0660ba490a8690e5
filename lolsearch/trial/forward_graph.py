"""No-grad forwards replayed from a CUDA graph: an evaluation pass's (``eval.cuda_graph``) and a training stage's
validations (the stage's ``cuda_graph``).

An evaluation pass runs the same forward (the student, the teacher under ``teacher_mode``, a reference model, the
decoder under ``distill_mode``) over batches of one shape; a stage's validations run its loss over the same batches
every ``eval_every`` steps. Eagerly, each forward is thousands of kernel launches and Python calls, and for a small
model that host work, not the GPU, sets the pass's time. :class:`GraphedForward` runs the first batch eagerly on a
side stream (Triton compiles and autotunes there, outside any capture), records the second into a CUDA graph with
static input buffers, and replays the graph for every later batch of that shape.
A batch of another shape (the short last batch of a capped pass) runs eagerly; a forward that cannot be captured
makes the rest of the pass eager, with one log line. The graph and its memory pool live as long as the object: one
pass, or one stage, within which nothing that a capture baked in (the weights' addresses, which the optimizer
updates in place, and the attention modes) changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

import torch

log = logging.getLogger(__name__)

Forward = Callable[..., torch.Tensor]
Graph = bool | Literal["auto"]  # eval.cuda_graph: replay a pass's forwards from CUDA graphs (auto: on a GPU)


def graph_wanted(setting: Graph, device: torch.device) -> bool:
    """Whether an evaluation pass on ``device`` replays its forwards from CUDA graphs (``auto``: on a GPU)."""
    return device.type == "cuda" and setting in (True, "auto")


def undo_failed_capture(main: torch.cuda.Stream, device: torch.device) -> None:
    """Undoes what a CUDA-graph capture that raised leaves behind, so that the process runs on eagerly: the capture
    stream still current (``capture_end`` raised before restoring ``main``), and the device's default generator
    still marked as capturing (only a successful ``capture_end`` clears the mark), after which every eager random
    op on the device fails ("Offset increment outside graph capture encountered unexpectedly"), in this trial and
    in the later ones of a reused worker. The generator gets a copy of its own state: the same seed and offset,
    not capturing."""
    torch.cuda.set_stream(main)
    torch.cuda.synchronize(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    generator = torch.cuda.default_generators[index]
    generator.graphsafe_set_state(generator.clone_state())


class GraphedForward:
    """``fn(*inputs) -> Tensor`` (``inputs``: tensors on ``device``, e.g. ``ids [B, T]``), replayed from a CUDA graph
    after a warm-up call.

    The tensor returned by a replay is the graph's static output, overwritten by the next call: read it (or queue
    work that reads it, as the evaluation passes do) before calling again. With ``enabled`` False, or off CUDA,
    every call is ``fn(*inputs)``.
    """

    def __init__(self, name: str, fn: Forward, device: torch.device, enabled: bool = True) -> None:
        self.name, self.fn = name, fn
        self.enabled = enabled and device.type == "cuda"
        self.stream = torch.cuda.Stream(device=device) if self.enabled else None
        self.warmed = False
        self.graph: torch.cuda.CUDAGraph | None = None
        self.inputs: tuple[torch.Tensor, ...] = ()
        self.out: torch.Tensor | None = None
        self.replays = 0

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.fn(*inputs)
        if self.graph is not None:
            if [(t.shape, t.dtype) for t in inputs] != [(t.shape, t.dtype) for t in self.inputs]:
                return self.fn(*inputs)
            for static, t in zip(self.inputs, inputs, strict=True):
                static.copy_(t, non_blocking=True)
            self.graph.replay()
            self.replays += 1
            return self.out
        if not self.warmed:
            return self._warm_up(inputs)
        return self._capture(inputs)

    def close(self) -> None:
        """Frees the graph, its static buffers and its memory pool; later calls run eagerly."""
        self.graph, self.inputs, self.out, self.enabled = None, (), None, False

    def _warm_up(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        main = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            out = self.fn(*inputs)
        main.wait_stream(self.stream)
        self.warmed = True
        return out

    def _capture(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        self.inputs = tuple(t.clone() for t in inputs)
        graph, main = torch.cuda.CUDAGraph(), torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(main)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                out = self.fn(*self.inputs)
        except Exception as err:  # noqa: BLE001 - a forward that cannot be captured runs eagerly, the pass goes on
            undo_failed_capture(main, self.stream.device)
            log.warning("%s: cuda_graph off (capture failed: %s: %s); its forwards run eagerly from here on",
                        self.name, type(err).__name__, str(err).strip().splitlines()[0][:200])
            self.close()
            return self.fn(*inputs)
        self.graph, self.out = graph, out
        graph.replay()
        self.replays += 1
        return out
