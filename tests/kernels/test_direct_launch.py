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


def test_a_site_stands_for_its_first_arguments(direct):
    """A launch that names its site skips the key: the second launch of a site goes through the kept launcher with the
    current tensors and the keyword values of the site's first launch; another site is another entry; ``site`` never
    reaches the kernel."""
    kernel = FakeKernel()
    x, y, z = torch.zeros(8), torch.ones(8), torch.full((8,), 2.0)
    direct.launch(kernel, (2,), x, y, N=8, BLOCK=16, num_warps=4, site=("plan", 0))
    direct.launch(kernel, (3,), z, y, N=8, BLOCK=16, num_warps=4, site=("plan", 0))
    direct.launch(kernel, (2,), x, y, N=8, BLOCK=16, num_warps=4, site=("plan", 1))
    assert [entry[0] for entry in kernel.log] == ["jit", "direct", "jit"]
    assert "site" not in kernel.log[0][3]
    _, grid, _, _, values = kernel.log[1]
    assert grid == (3, 1, 1) and values == (z, y, 8, 16)
    direct.launch(kernel, (1,), x, N=8, y=y, BLOCK=16, site=("tensor keyword",))
    direct.launch(kernel, (1,), x, N=8, y=z, BLOCK=16, site=("tensor keyword",))
    assert kernel.log[-1][0] == "direct" and kernel.log[-1][4] == (x, z, 8, 16)  # a tensor keyword is read per call


def test_checked_sites_refuse_a_second_argument_set(direct, monkeypatch):
    """Under CHECK_SITES a site that comes back with another value, dtype or alignment fails the launch."""
    monkeypatch.setattr(direct, "CHECK_SITES", True)
    kernel = FakeKernel()
    x = torch.zeros(8)
    direct.launch(kernel, (1,), x, x, N=8, BLOCK=16, site=("s",))
    direct.launch(kernel, (1,), torch.ones(8), x, N=8, BLOCK=16, site=("s",))  # other data, same key: fine
    for args, kwargs in (((x, x), {"N": 9, "BLOCK": 16}), ((x, x.double()), {"N": 8, "BLOCK": 16}),
                         ((torch.ones(9)[1:], x), {"N": 8, "BLOCK": 16})):
        with pytest.raises(AssertionError, match="stood for other arguments"):
            direct.launch(kernel, (1,), *args, **kwargs, site=("s",))


# The backwards of test_the_hybrid_ops_sites_...: per seed, (the inputs that train, token-major o, the kinds of o's
# gradient). Each argument of the backward's site has a pair of calls that differ in it alone: the gradients asked
# for (seed 1), o's gradient token-major, misaligned (seed 2 against seed 1) and o's layout (seed 2).
ALL, FEATURES = range(6), range(3, 6)
BACKWARDS = {1: [(ALL, True, ["contiguous"]), (FEATURES, True, ["contiguous"])],
             2: [(ALL, True, ["token-major", "misaligned"]), (ALL, False, ["contiguous"])],
             3: [(ALL, False, ["contiguous"])], 4: [(FEATURES, False, ["token-major"])]}


@pytest.mark.parametrize("schedule", ["walk", "parallel", "quadratic"])
def test_the_hybrid_ops_sites_each_stand_for_one_argument_set(schedule, direct, monkeypatch):
    """The hybrid op's forward and backward name their launches by site (the kept plan's serial number with what else
    sets an argument: save_lo, the layouts of o and its gradient, the gradients asked for, the tensors' alignment).
    In the interpreter, with the site check on, calls of one signature with other data, with and without autograd,
    a state in and out, token-major o, gradients of q, k, v or only of the features and γ (attention transfer),
    o's gradient contiguous, token-major or misaligned, misaligned inputs and a setting changed between calls never
    make one site stand for two argument sets (the interpreter's launches are not kept, so every launch is
    checked)."""
    import lolsearch.kernels._schedule as sc
    from kernel_testlib import make_inputs
    from lolsearch.kernels import hybrid_attention

    monkeypatch.setattr(direct, "CHECK_SITES", True)
    monkeypatch.setattr(sc, "QUADRATIC_MAX_T", 1000 if schedule == "quadratic" else 0)
    monkeypatch.setattr(sc, "PARALLEL_MAX_T", 0 if schedule == "walk" else None)
    monkeypatch.delenv("LOLSEARCH_KERNELS_PPS", raising=False)
    for seed, setting in ((1, None), (2, None), (3, "misaligned"), (4, "pps")):
        if setting == "pps":
            monkeypatch.setenv("LOLSEARCH_KERNELS_PPS", "2")
        inputs = make_inputs(1, 4, 2, 200, 16, 16, seed=seed)
        if setting == "misaligned":
            inputs = [torch.cat([x.new_zeros(1), x.flatten()])[1:].view(x.shape) for x in inputs]
        for trained, tok_o, dos in BACKWARDS[seed]:
            leaves = [x.clone().requires_grad_(i in trained) for i, x in enumerate(inputs)]
            o = hybrid_attention(*leaves, 64, "sliding", token_major_out=tok_o)
            for kind in dos:
                b, h, t, d = o.shape
                do = {"contiguous": torch.randn(b, h, t, d), "token-major": torch.randn(b, t, h, d).transpose(1, 2),
                      "misaligned": torch.randn(o.numel() + 1)[1:].view(o.shape)}[kind]
                torch.autograd.grad(o, [x for x in leaves if x.requires_grad], do, retain_graph=True)
        with torch.no_grad():
            hybrid_attention(*inputs, 64, "sliding", token_major_out=seed % 2 == 0)
            hybrid_attention(*inputs, 100, "terrace", return_state=True)
    sites = [key[0] for key in direct._SITE_KEYS]
    assert all(site[0] >= 0 for site in sites)
    assert any(site[1] == "bwd" for site in sites) and any(site[1] != "bwd" for site in sites)
