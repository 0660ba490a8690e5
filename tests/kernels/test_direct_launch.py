"""kernels/_direct.py on the CPU, with a stand-in kernel: a kept kernel is launched with the arguments in signature
order, and a call differing in anything Triton compiles for (a value, a dtype, a pointer's alignment) is a miss.
The GPU test ``test_gpu_direct_launch_matches_triton_launch`` checks the real kernels bit for bit."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


class FakeCompiled:
    """What ``kernel[grid](...)`` returns on a GPU: a launcher taking every argument in signature order."""

    packed_metadata = "meta"
    function = "fn"

    def __init__(self, log):
        self.log = log

    def launch_metadata(self, grid, stream, *values):
        return ("launch-meta", grid)

    def run(self, g0, g1, g2, stream, function, packed, meta, enter, leave, *values):
        self.log.append(("direct", (g0, g1, g2), stream, meta, values))


class FakeKernel:
    """A jitted kernel ``k(x, y, N, BLOCK)``: ``kernel[grid](...)`` logs the call and returns a compiled kernel."""

    arg_names = ["x", "y", "N", "BLOCK"]

    def __init__(self):
        self.log: list = []

    def __getitem__(self, grid):
        def call(*args, **kwargs):
            self.log.append(("jit", tuple(grid), args, kwargs))
            return FakeCompiled(self.log)

        return call


class FakeDriver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 1234


@pytest.fixture
def direct(monkeypatch):
    from lolsearch.kernels import _direct

    monkeypatch.setattr(_direct, "ENABLED", True)
    monkeypatch.setattr(_direct, "driver", SimpleNamespace(active=FakeDriver()))
    _direct.clear()
    yield _direct
    _direct.clear()


def test_second_call_goes_through_the_kept_launcher_in_signature_order(direct):
    kernel = FakeKernel()
    x, y = torch.zeros(8), torch.ones(8)
    direct.launch(kernel, (4, 2), x, y, N=8, BLOCK=16, num_warps=4)
    direct.launch(kernel, (4,), x, y, BLOCK=16, N=8, num_warps=4)  # same call, keywords in another order
    direct.launch(kernel, (4, 2), x, y, N=8, BLOCK=16, num_warps=4)
    kinds = [entry[0] for entry in kernel.log]
    assert kinds == ["jit", "jit", "direct"]  # keyword order is part of the key: the second call is a miss
    _, grid, stream, meta, values = kernel.log[-1]
    assert grid == (4, 2, 1) and stream == 1234 and meta == ("launch-meta", (4, 2, 1))
    assert values == (x, y, 8, 16)  # num_warps is a launch option, baked into the compiled kernel


@pytest.mark.parametrize("change", ["value", "dtype", "alignment", "option"])
def test_anything_triton_compiles_for_is_a_miss(direct, change):
    kernel = FakeKernel()
    x, y = torch.zeros(8), torch.ones(8)
    direct.launch(kernel, (1,), x, y, N=8, BLOCK=16, num_warps=4)
    kwargs = {"N": 8, "BLOCK": 16, "num_warps": 4}
    if change == "value":
        kwargs["BLOCK"] = 32
    elif change == "dtype":
        y = y.double()
    elif change == "alignment":
        y = torch.ones(9)[1:]  # 4 bytes past an aligned start
    else:
        kwargs["num_warps"] = 8
    direct.launch(kernel, (1,), x, y, **kwargs)
    assert [entry[0] for entry in kernel.log] == ["jit", "jit"]


def test_calls_with_defaults_or_config_keywords_are_not_kept(direct):
    kernel = FakeKernel()
    x = torch.zeros(8)
    for _ in range(2):
        direct.launch(kernel, (1,), x, x, N=8)  # BLOCK left to a default: the launcher could not be fed it
    assert [entry[0] for entry in kernel.log] == ["jit", "jit"]
    assert not direct._CACHE


def test_off_means_every_launch_through_the_kernel(direct, monkeypatch):
    monkeypatch.setattr(direct, "ENABLED", False)
    kernel = FakeKernel()
    x = torch.zeros(8)
    for _ in range(3):
        direct.launch(kernel, (1,), x, x, N=8, BLOCK=16)
    assert [entry[0] for entry in kernel.log] == ["jit"] * 3


def test_the_kept_kernels_are_bounded(direct, monkeypatch):
    monkeypatch.setattr(direct, "MAX_KEPT", 3)
    kernel = FakeKernel()
    x = torch.zeros(8)
    for n in range(5):
        direct.launch(kernel, (1,), x, x, N=n, BLOCK=16)
    assert 1 <= len(direct._CACHE) <= 3
