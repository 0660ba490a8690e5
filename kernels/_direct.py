"""Launching Triton kernels through their compiled launcher once a call site's arguments have been seen.

``kernel[grid](...)`` re-does Triton's per-call bookkeeping on every launch: binding and specializing the
arguments, the cache key, the autotuner's key and the global-value check, before the compiled kernel's own
launcher runs. At small T the forward is bound by that host time (issue 17: the eager 2K forward). :func:`launch`
does it once per distinct call: the first launch of a key goes through ``kernel[grid]`` (compiling, autotuning,
shared-memory errors and all) and keeps the compiled kernel it returns; later launches with the same key call that
kernel's launcher with the same arguments, exactly as ``JITFunction.run`` does after its cache lookup.

The key holds every non-tensor argument by value (constexprs, the autotuner's key inputs, specialized integers)
and every tensor's dtype and 16-byte alignment (what Triton specializes pointers on), plus the device: two calls
with equal keys compile to the same kernel and autotune to the same config. Off under the interpreter and with
``LOLSEARCH_KERNELS_DIRECT_LAUNCH=0`` (then every launch is ``kernel[grid](...)``).
"""

from __future__ import annotations

from typing import Any

import torch
from lolsearch.kernels._common import INTERPRET
from triton import knobs
from triton.runtime import driver

from lolsearch.core import kernel_env

ENABLED = not INTERPRET and kernel_env.read("LOLSEARCH_KERNELS_DIRECT_LAUNCH")

_OPTIONS = {"num_warps", "num_stages", "num_ctas", "maxnreg"}
# Keys hold T and the other sizes by value, so a process that sees ever new lengths would grow the dict without end:
# it starts over past this many entries (a miss costs one ordinary kernel[grid] launch).
MAX_KEPT = 4096
# Check every launch that names its site against the full key (tests set it): a site must never stand for two
# different argument sets.
CHECK_SITES = False
# key -> (compiled kernel, the keyword arguments' names in signature order after the positional ones, their values
# where the key is a site, else None)
_CACHE: dict[tuple, tuple[Any, tuple[str, ...], tuple | None]] = {}
_SITE_KEYS: dict[tuple, tuple] = {}  # site key -> the full key it stood for (CHECK_SITES)


def _jit_fn(kernel):
    """The JITFunction under an Autotuner / Heuristics wrapper."""
    while not hasattr(kernel, "arg_names"):
        kernel = kernel.fn
    return kernel


def aligned(*xs: torch.Tensor) -> tuple[bool, ...]:
    """Which tensors start on a 16-byte boundary (what Triton specializes pointers on)."""
    return tuple(x.data_ptr() % 16 == 0 for x in xs)


def _key(kernel, device: int, args: tuple, kwargs: dict) -> tuple:
    spec = [id(kernel), device]
    for x in (*args, *kwargs.values()):
        # aligned()'s rule, inline: this runs for every argument of every launch without a site
        spec.append((x.dtype, x.data_ptr() % 16 == 0) if isinstance(x, torch.Tensor) else x)
    spec.extend(kwargs)
    return tuple(spec)


def launch(kernel, grid: tuple[int, ...], *args, site: tuple | None = None, **kwargs):
    """``kernel[grid](*args, **kwargs)``; from the second call with the same key on, through the compiled kernel's
    launcher. ``grid``: 1 to 3 ints. Returns the compiled kernel.

    ``site``: a hashable the caller guarantees to fix every non-tensor argument, keyword name and tensor dtype and
    alignment of this launch (e.g. a plan's serial number with the inputs' alignment). It then stands for the key,
    which is not computed, and keyword arguments that are not tensors are taken as they were at the site's first
    launch."""
    if not ENABLED:
        return kernel[grid](*args, **kwargs)
    device = driver.active.get_current_device()
    if site is None:
        key = _key(kernel, device, args, kwargs)
    else:
        key = (site, id(kernel), device)
        if CHECK_SITES and _SITE_KEYS.setdefault(key, full := _key(kernel, device, args, kwargs)) != full:
            name = getattr(_jit_fn(kernel), "__name__", type(kernel).__name__)
            raise AssertionError(f"launch site {site} of {name} stood for other arguments")
    hit = _CACHE.get(key)
    if hit is None:
        compiled = kernel[grid](*args, **kwargs)
        names = _jit_fn(kernel).arg_names[len(args):]
        # kept where every argument was given (no defaults) and the other keywords are launch options
        if set(names) <= set(kwargs) and set(kwargs) - set(names) <= _OPTIONS and hasattr(compiled, "packed_metadata"):
            if len(_CACHE) >= MAX_KEPT:
                _CACHE.clear()
            tail = tuple(kwargs[n] for n in names) if site is not None else None
            if tail is not None and any(isinstance(x, torch.Tensor) for x in tail):
                tail = None  # a tensor given by keyword is read from each call, as without a site
            _CACHE[key] = (compiled, tuple(names), tail)
        return compiled
    compiled, names, tail = hit
    values = (*args, *(tail if tail is not None else (kwargs[n] for n in names)))
    g = (*grid, 1, 1)
    stream = driver.active.get_current_stream(device)
    meta = compiled.launch_metadata(g[:3], stream, *values)  # for the launch hooks, as JITFunction.run passes it
    compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, meta,
                 knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook, *values)
    return compiled


def clear() -> None:
    """Forgets every kept kernel (the next launch of each key goes through ``kernel[grid]`` again)."""
    _CACHE.clear()
    _SITE_KEYS.clear()


__all__ = ["ENABLED", "aligned", "clear", "launch"]
