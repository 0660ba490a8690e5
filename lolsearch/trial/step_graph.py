"""Whole-step CUDA-graph capture of a training step (``cuda_graph`` in a stage's config).

One optimizer step (every micro-batch's forward and backward, gradient clipping, the fused AdamW update) is
recorded once into a CUDA graph and replayed for the following steps, so a step costs one launch instead of
thousands of kernel launches and Python calls. The graph reads its micro-batches from static input buffers
that each step copies the next batches into, and the learning rate from a device tensor that the loop fills
before each replay (so warmup/cosine/plateau schedules keep working). Gradients live in the graph's private
memory pool: the first micro-batch's backward writes them and the later ones accumulate, on every replay, so
no zero-grad is needed inside the graph.

The first step runs eagerly on the capture stream (it compiles, autotunes and creates the optimizer state),
the second is captured and then replayed. Whatever keeps a step from being captured (not CUDA, a host sync
inside the step, a batch of another shape) makes the stage run its remaining steps eagerly, with one log line
saying why; the losses are the same either way up to floating-point rounding.

``cuda_graph: auto`` (the default) graphs micro-batches of up to ``AUTO_GRAPH_TOKENS`` tokens, where the step is
bound by launch overhead; ``results/perf/perf.md`` has the measurements behind that rule.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from lolsearch.trial.forward_graph import undo_failed_capture

log = logging.getLogger(__name__)

LossFn = Callable[[dict], torch.Tensor]


def graph_unavailable(params: Sequence[nn.Parameter], compile_mode: str) -> str | None:
    """Why a stage over ``params`` cannot capture its step (None: it can)."""
    if not params or not all(p.is_cuda for p in params):
        return "the parameters are not on a CUDA device"
    if compile_mode == "reduce-overhead":
        return "compile=reduce-overhead captures CUDA graphs of its own"
    return None


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Sets every group's learning rate; a device-tensor lr (graph-capturable AdamW) is filled in place."""
    for group in opt.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _update(params: Sequence[nn.Parameter], loss_fn: LossFn, micro: list[dict], opt: torch.optim.Optimizer,
            grad_clip: float | None) -> torch.Tensor:
    """Forward and backward of every micro-batch, clipping, the optimizer's update (no zero-grad: the graph's
    backward writes fresh gradients each replay); returns the mean loss as a detached tensor."""
    total: torch.Tensor | float = 0.0
    for batch in micro:
        loss = loss_fn(batch)
        (loss / len(micro)).backward()
        total = total + loss.detach() / len(micro)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    assert isinstance(total, torch.Tensor)
    return total


def eager_step(params: Sequence[nn.Parameter], loss_fn: LossFn, micro: list[dict], opt: torch.optim.Optimizer,
               grad_clip: float | None) -> torch.Tensor:
    """One optimizer step over the micro-batches ``micro``; returns their mean loss as a detached tensor."""
    total = _update(params, loss_fn, micro, opt, grad_clip)
    opt.zero_grad(set_to_none=True)
    return total


def _signature(micro: list[dict]) -> tuple:
    return tuple(tuple((k, tuple(v.shape), v.dtype, v.device) if isinstance(v, torch.Tensor) else (k, v)
                       for k, v in sorted(b.items())) for b in micro)


def _shapes(micro: list[dict]) -> str:
    return ",".join(str(tuple(b["input_ids"].shape)) for b in micro if isinstance(b.get("input_ids"), torch.Tensor))


class GraphedStep:
    """The training step of one stage as a CUDA graph; :meth:`step` returns None once the stage must run eagerly.

    ``opt`` must be built with ``capturable=True`` and a device-tensor learning rate
    (:func:`lolsearch.trial.train.make_optimizer` with ``capturable=True``).
    """

    def __init__(self, name: str, params: Sequence[nn.Parameter], loss_fn: LossFn, opt: torch.optim.Optimizer,
                 grad_clip: float | None) -> None:
        self.name, self.params, self.loss_fn, self.opt, self.grad_clip = name, list(params), loss_fn, opt, grad_clip
        self.stream = torch.cuda.Stream(device=self.params[0].device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: list[dict] = []
        self.signature: tuple | None = None
        self.total: torch.Tensor | None = None
        self.warmed = False
        self.failed: str | None = None

    def step(self, micro: list[dict]) -> torch.Tensor | None:
        """Runs one optimizer step over ``micro``; returns the mean loss (a fresh device tensor), or None when
        the step was not run because the stage must continue eagerly (logged once; the caller runs it)."""
        if self.failed is not None:
            return None
        if not self.warmed:
            return self._warm_up(micro)
        if self.graph is None:
            return self._capture(micro)
        if _signature(micro) != self.signature:
            return self._fail(f"a batch of another shape: {_shapes(micro)} vs {_shapes(self.static)}")
        self._load(micro)
        self.graph.replay()
        assert self.total is not None
        return self.total.clone()

    def close(self) -> None:
        """Frees the graph and its memory pool; the parameters' gradients are None afterwards."""
        self.graph, self.static, self.total = None, [], None
        for p in self.params:
            p.grad = None

    def _warm_up(self, micro: list[dict]) -> torch.Tensor:
        # An eager step on the capture stream: Triton JIT/autotuning, torch.compile and the optimizer state
        # happen here, outside the capture.
        main = torch.cuda.current_stream(self.stream.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            total = eager_step(self.params, self.loss_fn, micro, self.opt, self.grad_clip)
        main.wait_stream(self.stream)
        self.warmed = True
        return total

    def _capture(self, micro: list[dict]) -> torch.Tensor | None:
        self.static = [{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in micro]
        self.signature = _signature(micro)
        self.opt.zero_grad(set_to_none=True)  # the captured backward allocates the gradients in the graph's pool
        torch.cuda.synchronize(self.stream.device)
        torch.cuda.empty_cache()  # the warm-up's cached blocks go back before the graph's pool grows
        graph, main = torch.cuda.CUDAGraph(), torch.cuda.current_stream(self.stream.device)
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                self.total = _update(self.params, self.loss_fn, self.static, self.opt, self.grad_clip)
        except Exception as err:  # noqa: BLE001 - anything that breaks capture means eager steps, not a failed trial
            undo_failed_capture(main, self.stream.device)
            return self._fail(f"capture failed: {type(err).__name__}: {str(err).strip().splitlines()[0][:200]}")
        self.graph = graph
        log.info("%s: training step captured as a CUDA graph (%d micro-batches)", self.name, len(micro))
        graph.replay()
        return self.total.clone()

    def _load(self, micro: list[dict]) -> None:
        for dst, src in zip(self.static, micro, strict=True):
            for k, v in src.items():
                if isinstance(v, torch.Tensor):
                    dst[k].copy_(v, non_blocking=True)

    def _fail(self, why: str) -> None:
        self.failed = why
        self.close()
        log.warning("%s: cuda_graph off for the rest of the stage (%s); running eager steps", self.name, why)
        return None
