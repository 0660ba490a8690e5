"""Optuna samplers a sweep can hand to Ray Tune, which pickles its searcher (with the sampler inside) when the
Tuner starts and when it saves the searcher's state.

Optuna's genetic samplers (NSGA-II) hold a ``threading.Lock`` that neither ``pickle`` nor ``cloudpickle`` can
serialize, so a Tuner with a plain ``NSGAIISampler`` fails at start with "cannot pickle '_thread.lock' object".
"""

from __future__ import annotations

import threading
from typing import Any

from optuna.samplers import NSGAIISampler


class PicklableNSGAIISampler(NSGAIISampler):
    """``NSGAIISampler`` that pickles: its lock is left out and a fresh one is made on unpickling (a lock guards
    one process's threads; it has no state worth carrying)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


__all__ = ["PicklableNSGAIISampler"]
