"""The fused feature maps (Hedgehog, T2R) against the plain modules (``attention.featuremaps`` on keys expanded to
query heads, in fp32): forward and the gradients of x, W and b, on CPU (interpreter, fp32/fp16) and on a GPU (every
dtype), and a linearized model's logits and gradients with the fused kernels on and off."""

from __future__ import annotations

import pytest
import torch

from lolsearch.attention.chunked import expand_kv
from lolsearch.attention.featuremaps import T2R, Hedgehog
from lolsearch.config.plugins import HedgehogParams, ProjectionParams

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# on a GPU machine these run with the GPU tests (kernels/gpu_check.sh selects -m gpu); on CPU in the interpreter
pytestmark = [pytest.mark.gpu] if DEV == "cuda" else []
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEV == "cuda" else [])
# output / gradient tolerance (relative to the largest entry): fp32 runs 3-pass TF32 dots; 16-bit rounds φ and dx
TOLS = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 5e-3), torch.bfloat16: (1e-2, 2e-2)}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-30)).item()


def _case(kind, b, h, hx, t, d, p, halfspace, dtype, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the maps draw their init from the global generator: fixed per case
        torch.manual_seed(seed)
        if kind == "hedgehog":
            fm = Hedgehog(h, d, HedgehogParams(feature_dim=p, halfspace=halfspace, init="kaiming"))
        else:
            fm = T2R(h, d, ProjectionParams(feature_dim=p, init="kaiming"))
    if kind == "t2r":
        with torch.no_grad():
            fm.bias.normal_(0, 0.3, generator=gen)  # T2R starts at b = 0; a trained bias moves the ReLU's kinks
    fm = fm.to(DEV)
    with torch.no_grad():
        fm.weight.mul_(scale)
    x = torch.randn(b, hx, t, d, generator=gen).to(DEV, dtype)
    f = p if halfspace or kind == "t2r" else 2 * p
    g = torch.randn(b, h, t, f, generator=gen).to(DEV)
    return fm, x, g


def _near_kink(fm: T2R, x: torch.Tensor, h: int) -> torch.Tensor:
    """Entries ``[B, H, T, P]`` of T2R's pre-activation xW + b within the rounding of the kernel's products of the
    clamp at eps, where the kernel and the fp32 reference may take different sides of the ReLU: W rounded to 16-bit x's
    dtype (off by half its eps of itself; twice that is taken), or for 16-bit x with 16-bit products off a
    10-bit-mantissa TF32 pass (2^-9 taken); about fp32 for fp32 x. Asserts that they are few, so the comparison still
    covers the gradient almost everywhere."""
    from lolsearch.kernels.featuremap import low_precision

    xe = expand_kv(x.float(), h)
    y = torch.einsum("bhtd,hdp->bhtp", xe, fm.weight.detach()) + fm.bias.detach()[None, :, None]
    if x.dtype == torch.float32:
        unit = 2.0**-18
    else:
        unit = torch.finfo(x.dtype).eps if low_precision(x.dtype) else 2.0**-9
    near = (y - 1e-12).abs() <= unit * torch.einsum("bhtd,hdp->bhtp", xe.abs(), fm.weight.detach().abs())
    assert near.float().mean() < (0.06 if x.dtype == torch.bfloat16 else 0.02)
    return near


def _fused(kind, fm, x, dtype=None):
    from lolsearch.kernels import fused_features

    return fused_features(kind, x, fm.weight, getattr(fm, "bias", None), getattr(fm.params, "halfspace", False),
                          out_dtype=dtype)


def _assert_fp32_matches_module(kind, fm, x, g, params, h):
    """The fused map's φ and gradients (x and ``params``) equal the fp32 module's on x expanded to h query heads,
    to 1e-5 relative."""
    xr = x.float().requires_grad_(True)
    ref = fm(expand_kv(xr, h))
    want = torch.autograd.grad(ref, (xr, *params), g)
    xl = x.clone().requires_grad_(True)
    out = _fused(kind, fm, xl)
    got = torch.autograd.grad(out, (xl, *params), g)
    assert _rel(out, ref) <= 1e-5
    for name, a, b in zip(["x", "W", "b"], got, want, strict=False):
        assert _rel(a, b) <= 1e-5, f"{kind} d{name}: {_rel(a, b):.2e}"
    return want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["hedgehog", "t2r"])
@pytest.mark.parametrize("b,h,hx,t,d,p,halfspace", [
    (2, 4, 4, 63, 64, 64, False),   # queries; T not a multiple of the 64-row tile
    (1, 6, 2, 65, 64, 64, False),   # keys at kv heads (3 query heads each)
    (2, 3, 1, 1, 16, 24, True),     # one token, halfspace, feature count not a power of two
    (1, 4, 2, 130, 24, 32, False),  # head size not a power of two
    (1, 4, 2, 70, 128, 128, False),  # a wide W tile: on a GPU, fp32 steps down to configs that fit, or torch ops
    (1, 2, 1, 40, 128, 256, True),   # wider: T2R's backward fits no config even in 16-bit (torch ops on a GPU)
])
def test_fused_map_matches_module(kind, b, h, hx, t, d, p, halfspace, dtype, nan_alloc):
    tol_o, tol_g = TOLS[dtype]
    fm, x, g = _case(kind, b, h, hx, t, d, p, halfspace, dtype)
    params = list(fm.parameters())
    if kind == "t2r":  # ReLU's gradient jumps at its kink: no upstream gradient where rounding may decide the side
        g = g * ~_near_kink(fm, x, h)
    xr = x.float().requires_grad_(True)
    ref = fm(expand_kv(xr, h))
    ref_grads = torch.autograd.grad(ref, (xr, *params), g)
    xl = x.clone().requires_grad_(True)
    out = _fused(kind, fm, xl, dtype)
    assert out.shape == ref.shape and out.dtype == dtype
    grads = torch.autograd.grad(out, (xl, *params), g.to(dtype))
    assert grads[0].dtype == dtype and all(gr.dtype == torch.float32 for gr in grads[1:])
    assert _rel(out, ref) <= tol_o
    for name, got, want in zip(["x", "W", "b"], grads, ref_grads, strict=False):
        assert _rel(got, want) <= tol_g, f"{kind} d{name}: {_rel(got, want):.2e}"


@pytest.mark.parametrize("kind", ["hedgehog", "t2r"])
@pytest.mark.parametrize("fwd,bwd,dx", [
    (dict(R=16, L=3), dict(R=16), dict(R=16)),  # a forward program over three tiles, the last partly past T
    (dict(R=32, L=2), dict(R=64), dict(R=64)),  # the parameter-gradient kernel's programs walk several tiles
    (dict(R=64, L=4), dict(R=128), dict(R=64)),  # the 16-bit defaults' tiles
])
def test_tile_configs_match_module(kind, fwd, bwd, dx, nan_alloc, monkeypatch):
    """Every row tiling (R rows per tile, L tiles per forward program) gives the module's φ and gradients: W[h]
    loaded once per program serves each of its tiles, masked rows past T write nothing."""
    import lolsearch.kernels.featuremap as fmod

    cfgs = {"fwd": fwd, "bwd": bwd, "dx": dx}
    monkeypatch.setattr(fmod, "config", lambda kernel, *_: {"num_warps": 4, "num_stages": 1, **cfgs[kernel]})
    fm, x, g = _case(kind, 2, 6, 2, 100, 16, 16, False, torch.float32, seed=3)
    params = list(fm.parameters())
    if kind == "t2r":
        g = g * ~_near_kink(fm, x, 6)
    want = _assert_fp32_matches_module(kind, fm, x, g, params, 6)
    fm.requires_grad_(False)
    xf = x.clone().requires_grad_(True)
    (dx_only,) = torch.autograd.grad(_fused(kind, fm, xf), (xf,), g)
    assert _rel(dx_only, want[0]) <= 1e-5


@pytest.mark.parametrize("dtype", DTYPES[1:])
@pytest.mark.parametrize("kind", ["hedgehog", "t2r"])
def test_16bit_products_round_w_to_x_dtype(kind, dtype, nan_alloc, monkeypatch):
    """For 16-bit x both settings of LOLSEARCH_KERNELS_FEATURES_16BIT give the module's φ and gradients (frozen and
    trained maps), and with 16-bit products (the default) W enters rounded to x's dtype: φ is the fp32-operand
    kernel's on that rounded W (and not the one on W itself, where that kernel's products are finer)."""
    import lolsearch.kernels.featuremap as fmod

    fm, x, g = _case(kind, 1, 6, 2, 70, 64, 32, False, dtype, scale=3.0, seed=5)
    params = list(fm.parameters())
    if kind == "t2r":
        g = g * ~_near_kink(fm, x, 6)
    tol_o, tol_g = TOLS[dtype]
    xr = x.float().requires_grad_(True)
    ref = fm(expand_kv(xr, 6))
    want = torch.autograd.grad(ref, (xr, *params), g)
    outs = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("LOLSEARCH_KERNELS_FEATURES_16BIT", setting)
        assert fmod.low_precision(dtype) == (setting == "1")
        xl = x.clone().requires_grad_(True)
        outs[setting] = out = _fused(kind, fm, xl, torch.float32)
        got = torch.autograd.grad(out, (xl, *params), g)
        assert _rel(out, ref) <= tol_o
        for name, a, b in zip(["x", "W", "b"], got, want, strict=False):
            assert _rel(a, b) <= tol_g, f"{kind} d{name} (16-bit products {setting}): {_rel(a, b):.2e}"
        fm.requires_grad_(False)
        xf = x.clone().requires_grad_(True)
        (dx_only,) = torch.autograd.grad(_fused(kind, fm, xf), (xf,), g.to(dtype))
        fm.requires_grad_(True)
        assert _rel(dx_only, want[0]) <= tol_g
    with torch.no_grad():
        exact = fm.weight.clone()
        fm.weight.copy_(exact.to(dtype).float())  # W representable in x's dtype: fp32 operands see the same products
        rounded = _fused(kind, fm, x, torch.float32)  # setting "0" is still on
        fm.weight.copy_(exact)
    assert _rel(outs["1"], rounded) <= 1e-5
    if DEV == "cpu" or dtype == torch.bfloat16:  # where the fp32-operand pass is finer than x's dtype (GPU fp16 and
        assert _rel(outs["0"], rounded) > 1e-4   # TF32 share a 10-bit mantissa; the interpreter multiplies in fp32)


def test_configs_fall_back_within_shared_memory(nan_alloc, monkeypatch):
    """A launch config that needs more shared memory than the device has (Triton raises OutOfResources before
    launching) falls back to smaller row tiles, then one stage; the results are the same, and the config that fit
    is remembered per shape, so later calls start there."""
    import lolsearch.kernels._common as common
    import lolsearch.kernels.featuremap as fmod
    from triton.runtime.errors import OutOfResources

    launched = []

    class Limited:  # stands in for a kernel that fits the budget only at R <= 32 and one stage
        def __init__(self, kernel) -> None:
            self.kernel = kernel

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                launched.append((self.kernel.fn.__name__, kwargs["R"], kwargs["num_stages"]))
                if kwargs["R"] > 32 or kwargs["num_stages"] > 1:
                    raise OutOfResources(kwargs["R"] * 4096, 232448, "shared memory")
                return self.kernel[grid](*args, **kwargs)
            return run

    fm, x, g = _case("hedgehog", 1, 6, 2, 70, 16, 16, False, torch.float32, seed=4)
    params = list(fm.parameters())
    xl = x.clone().requires_grad_(True)
    want = [fm(expand_kv(x.float(), 6)), *torch.autograd.grad(_fused("hedgehog", fm, xl), (xl, *params), g)]
    for name in ("features_fwd_kernel", "features_bwd_kernel", "features_dx_kernel"):
        monkeypatch.setattr(fmod, name, Limited(getattr(fmod, name)))
    monkeypatch.setattr(fmod, "config", lambda kernel, *_: {"R": 128, "num_warps": 8, "num_stages": 2,
                                                           **({"L": 2} if kernel == "fwd" else {})})
    monkeypatch.setattr(common, "_FITTED", {})
    for _ in range(2):
        launched.clear()
        xl = x.clone().requires_grad_(True)
        out = _fused("hedgehog", fm, xl)
        got = [out, *torch.autograd.grad(out, (xl, *params), g)]
        for a, b in zip(got, want, strict=True):
            assert _rel(a, b) <= 1e-5
        ran = [(name, r, s) for name, r, s in launched if r <= 32 and s == 1]
        assert [name for name, *_ in ran] == ["features_fwd_kernel", "features_bwd_kernel"]
        assert all(r == 32 for _, r, _ in ran)
        first = launched
    assert first == ran  # the second call launched the configs that fit at once
    assert sorted(key[0] for key in common._FITTED) == ["bwd", "fwd"]


def test_short_sequences_get_tiles_no_larger_than_their_rows(nan_alloc, monkeypatch):
    """Where T is shorter than a program's rows (a decode step's one row, a short prompt), the tiles shrink to the
    power of two covering T (at least 16 rows) and the forward takes only the tiles T fills; the features still equal
    the module's. Training lengths keep the measured configs."""
    import lolsearch.kernels.featuremap as fmod

    assert fmod.config("fwd", 2, 64, 64, 1) == {**fmod.FWD, "R": 16, "L": 1}
    assert fmod.config("fwd", 2, 64, 64, 100) == {**fmod.FWD, "R": 64, "L": 2}
    assert fmod.config("fwd", 2, 64, 64, 1024) == fmod.FWD
    assert fmod.config("dx", 2, 64, 64, 20) == {**fmod.DX, "R": 32}
    assert fmod.config("bwd", 4, 64, 64, 2048) == fmod.BWD_WIDE
    # 16-bit products have configs of their own (fp32 x never takes them)
    assert fmod.config("fwd", 2, 64, 64, 1024, lowp=True) == fmod.FWD_LOWP
    assert fmod.config("bwd", 2, 64, 64, 1024, lowp=True) == fmod.BWD_LOWP
    assert fmod.config("bwd", 2, 64, 64, 1024, lowp=False) == fmod.BWD
    assert fmod.config("fwd", 4, 64, 64, 1024, lowp=True) == fmod.FWD
    rows = []
    kernel = fmod.features_fwd_kernel

    class Spy:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                rows.append((kwargs["R"], kwargs["L"]))
                return kernel[grid](*args, **kwargs)
            return run

    monkeypatch.setattr(fmod, "features_fwd_kernel", Spy())
    fm, x, _ = _case("hedgehog", 2, 4, 2, 1, 16, 16, False, torch.float32, seed=5)
    assert _rel(_fused("hedgehog", fm, x), fm(expand_kv(x.float(), 4))) <= 1e-5
    assert rows == [(16, 1)]


@pytest.mark.parametrize("kind,halfspace", [("hedgehog", False), ("hedgehog", True), ("t2r", False)])
@pytest.mark.parametrize("frozen", [False, True])
def test_heads_too_wide_for_any_config_run_in_torch(kind, halfspace, frozen, nan_alloc, monkeypatch):
    """Where no config fits the device's shared memory, φ and every gradient come from the same math in torch ops,
    equal to the module's, and the kernels are not tried again for that shape."""
    import lolsearch.kernels._common as common
    import lolsearch.kernels.featuremap as fmod
    from triton.runtime.errors import OutOfResources

    tries = []

    class Never:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                tries.append(kwargs["R"])
                raise OutOfResources(300000, 232448, "shared memory")
            return run

    for name in ("features_fwd_kernel", "features_bwd_kernel", "features_dx_kernel"):
        monkeypatch.setattr(fmod, name, Never())
    monkeypatch.setattr(common, "_FITTED", {})
    fm, x, g = _case(kind, 2, 6, 2, 33, 16, 24, halfspace, torch.float32, seed=6)
    if kind == "t2r":
        g = g * ~_near_kink(fm, x, 6)
    fm.requires_grad_(not frozen)
    params = [] if frozen else list(fm.parameters())
    for call in range(2):
        _assert_fp32_matches_module(kind, fm, x, g, params, 6)
        if call == 0:
            assert tries and min(tries) == 16
            tries.clear()
    assert not tries and all(cfg is None for cfg in common._FITTED.values())


@pytest.mark.parametrize("kind", ["hedgehog", "t2r"])
def test_clamped_features_pass_no_gradient(kind, nan_alloc):
    """Large logits push many features to eps (Hedgehog's softmax underflows, T2R's ReLU cuts): they are clamped
    there, and the gradient skips them as ``clamp``'s and ``relu``'s do."""
    fm, x, g = _case(kind, 1, 2, 2, 64, 16, 16, False, torch.float32, scale=60.0, seed=3)
    params = list(fm.parameters())
    xr = x.clone().requires_grad_(True)
    ref = fm(xr)
    assert (ref == 1e-12).float().mean() > 0.3  # the case clamps
    ref_grads = torch.autograd.grad(ref, (xr, *params), g)
    xl = x.clone().requires_grad_(True)
    out = _fused(kind, fm, xl)
    grads = torch.autograd.grad(out, (xl, *params), g)
    assert torch.equal(out == 1e-12, ref == 1e-12)
    # fp32 sums in other orders than PyTorch's, at logits 60x their usual size: up to 1.03e-5 of the largest entry
    # was seen in a full CPU run (1e-5 elsewhere; a missing or misplaced term is off by 1e-2 or more)
    for got, want in zip(grads, ref_grads, strict=True):
        assert _rel(got, want) <= 5e-5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["hedgehog", "t2r"])
@pytest.mark.parametrize("b,h,hx,t,d,p,halfspace", [
    (2, 4, 4, 40, 16, 16, False),   # queries
    (1, 6, 2, 65, 24, 32, True),    # keys at kv heads (3 query heads summed in the kernel), halfspace, odd sizes
])
def test_frozen_maps_get_dx_alone(kind, b, h, hx, t, d, p, halfspace, dtype, nan_alloc, monkeypatch):
    """Maps that do not train (a LoRA stage): the backward runs the dx-only kernel, whose dx matches the module's
    and the parameter-gradient kernel's, and returns no parameter gradients."""
    import lolsearch.kernels.featuremap as fmod

    tol_g = TOLS[dtype][1]
    fm, x, g = _case(kind, b, h, hx, t, d, p, halfspace, dtype, seed=7)
    if kind == "t2r":
        g = g * ~_near_kink(fm, x, h)
    xr = x.float().requires_grad_(True)
    (want,) = torch.autograd.grad(fm(expand_kv(xr, h)), (xr,), g)
    xa = x.clone().requires_grad_(True)
    (dx_with_dw,) = torch.autograd.grad(_fused(kind, fm, xa), (xa,), g.to(dtype))
    fm.requires_grad_(False)
    launched = []
    monkeypatch.setattr(fmod, "features_dx_kernel", _Spy(fmod.features_dx_kernel, launched))
    returned = []
    backward = fmod.FeatureMapFn.backward
    monkeypatch.setattr(fmod.FeatureMapFn, "backward", staticmethod(lambda ctx, d: returned.append(backward(ctx, d)) or returned[-1]))
    xb = x.clone().requires_grad_(True)
    (dx_only,) = torch.autograd.grad(_fused(kind, fm, xb), (xb,), g.to(dtype))
    assert launched and all(r is None for r in returned[0][1:])
    assert dx_only.dtype == dtype
    assert _rel(dx_only, want) <= tol_g, f"{kind} dx: {_rel(dx_only, want):.2e}"
    assert _rel(dx_only, dx_with_dw) <= (1e-6 if dtype == torch.float32 else tol_g)


class _Spy:
    """Stands in for a Triton kernel: records each launch, then runs it."""

    def __init__(self, kernel, calls: list) -> None:
        self.kernel, self.calls = kernel, calls

    def __getitem__(self, grid):
        self.calls.append(grid)
        return self.kernel[grid]


@pytest.mark.parametrize("kind", ["hedgehog", "t2r"])
def test_inputs_without_grad_get_parameter_grads_alone(kind, nan_alloc, monkeypatch):
    """Attention transfer: q and k come from frozen projections, so only the maps' parameters get gradients; the
    backward skips dx (returns None for it) and gives the same dW (db) as with dx."""
    import lolsearch.kernels.featuremap as fmod

    fm, x, g = _case(kind, 2, 6, 2, 40, 16, 16, False, torch.float32, seed=5)
    params = list(fm.parameters())
    full = torch.autograd.grad(_fused(kind, fm, x.clone().requires_grad_(True)), params, g)
    returned = []
    backward = fmod.FeatureMapFn.backward
    monkeypatch.setattr(fmod.FeatureMapFn, "backward", staticmethod(lambda ctx, d: returned.append(backward(ctx, d)) or returned[-1]))
    alone = torch.autograd.grad(_fused(kind, fm, x), params, g)
    assert returned[0][0] is None
    for got, want in zip(alone, full, strict=True):
        assert torch.equal(got, want)


def test_rejects_bad_input():
    from lolsearch.kernels import fused_features

    with pytest.raises(ValueError, match="multiple"):
        fused_features("hedgehog", torch.zeros(1, 3, 4, 8), torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match=r"\[H, D, P\]"):
        fused_features("hedgehog", torch.zeros(1, 4, 4, 8), torch.zeros(4, 16, 8))
    with pytest.raises(ValueError, match="bias"):
        fused_features("t2r", torch.zeros(1, 4, 4, 8), torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="no fused kernel"):
        fused_features("performer", torch.zeros(1, 4, 4, 8), torch.zeros(4, 8, 8))


def _tiny_linearized_llama(kind: str, layout: str, window: int) -> torch.nn.Module:
    """A 2-layer GQA Llama (4 query, 2 kv heads, D 16) linearized with feature map ``kind`` on the Triton backend."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lolsearch.config import AttentionConfig
    from lolsearch.trial.surgery import linearize

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, head_dim=16, pad_token_id=0)
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg).to(DEV)
    linearize(model, AttentionConfig(feature_map={"kind": kind, "params": {"feature_dim": 8}}, layout=layout,
                                     window=window, backend="triton"))
    return model


@pytest.mark.parametrize("kind,layout,window", [("hedgehog", "linear", 0), ("hedgehog", "sliding", 16),
                                                ("t2r", "sliding", 16)])
def test_layer_fused_features_match_unfused(kind, layout, window, monkeypatch):
    """A tiny GQA Llama linearized on the Triton backend: the same logits and gradients (every feature map's
    parameters and γ) with the feature maps' fused kernels as with the modules; outside ``fused_features`` the
    layers follow LOLSEARCH_KERNELS_FUSED_FEATURES (default on)."""
    from lolsearch.trial.surgery import attention_parameters, fused_features

    model = _tiny_linearized_llama(kind, layout, window)
    cls = {"hedgehog": Hedgehog, "t2r": T2R}[kind]
    calls = []
    real = cls.fused
    monkeypatch.setattr(cls, "fused", lambda self, x, dt: calls.append(1) or real(self, x, dt))
    ids = torch.randint(0, 97, (1, 70), generator=torch.Generator().manual_seed(1)).to(DEV)  # two 64-row chunks
    params = attention_parameters(model)
    results = {}
    for fused in (True, False):
        with fused_features(model, fused):
            logits = model(input_ids=ids).logits
            results[fused] = (logits, torch.autograd.grad(logits.square().mean(), params))
        assert len(calls) == (4 if fused else 0)  # φ(q), φ(k) of both layers
        calls.clear()
    with torch.no_grad():  # which path the setting picks: a few tokens show it
        monkeypatch.delenv("LOLSEARCH_KERNELS_FUSED_FEATURES", raising=False)
        model(input_ids=ids[:, :8])
        assert len(calls) == 4
        calls.clear()
        monkeypatch.setenv("LOLSEARCH_KERNELS_FUSED_FEATURES", "0")
        model(input_ids=ids[:, :8])
        assert not calls
    (y1, g1), (y0, g0) = results[True], results[False]
    assert _rel(y1, y0) <= 1e-5
    for a, b in zip(g1, g0, strict=True):
        assert _rel(a, b) <= 1e-4


def test_generation_with_fused_maps_matches_modules(monkeypatch):
    """Prefill and decode (the per-layer step, and the static step of a left-padded batch) compute φ by the fused
    kernels when they are on: the same greedy tokens and scores as with the modules."""
    from lolsearch.trial.surgery import fused_features

    model = _tiny_linearized_llama("hedgehog", "sliding", 4).eval()
    from lolsearch.attention import layer as layer_mod

    calls, static = [], []
    real, real_static = Hedgehog.fused, layer_mod.static_decode_step
    monkeypatch.setattr(Hedgehog, "fused", lambda self, x, dt: calls.append(x.shape[-2]) or real(self, x, dt))
    monkeypatch.setattr(layer_mod, "static_decode_step", lambda *a: static.append(1) or real_static(*a))
    ids = torch.randint(1, 97, (2, 12), generator=torch.Generator().manual_seed(2)).to(DEV)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # a left-padded row: generation then decodes through the static step
    for m in (None, mask):
        out = {}
        for fused in (True, False):
            with fused_features(model, fused), torch.no_grad():
                gen = model.generate(ids, attention_mask=m, max_new_tokens=4, do_sample=False, output_scores=True,
                                     return_dict_in_generate=True)
            out[fused] = gen.sequences, torch.stack(gen.scores)
            assert bool(calls) == fused and (not fused or 1 in calls)  # decode steps ran fused too
            calls.clear()
        assert bool(static) == (m is not None)
        static.clear()
        assert torch.equal(out[True][0], out[False][0])
        assert _rel(out[True][1], out[False][1]) <= 1e-4


def test_attention_transfer_asks_no_input_gradients(monkeypatch):
    """The attention-transfer loss of a tiny linearized Llama (Triton backend, only φ and γ trainable, as the stage
    runs it): the hybrid op's backward is asked for no dq, dk, dv and the fused maps' for no dx, so both skip that
    work; every map's parameters and γ still get gradients."""
    import lolsearch.kernels.featuremap as fmod
    import lolsearch.kernels.hybrid as hy

    from lolsearch.attention.layer import DistillRecorder
    from lolsearch.trial.distill import layer_losses
    from lolsearch.trial.surgery import attention_parameters

    model = _tiny_linearized_llama("hedgehog", "sliding", 16)
    model.requires_grad_(False)
    params = attention_parameters(model)
    for p in params:
        p.requires_grad_(True)
    asked = {"attention": [], "maps": []}
    attn_bwd, map_bwd = hy._backward, fmod.FeatureMapFn.backward
    monkeypatch.setattr(hy, "_backward", lambda ctx, do: asked["attention"].append(ctx.needs_input_grad[:6])
                        or attn_bwd(ctx, do))
    monkeypatch.setattr(fmod.FeatureMapFn, "backward", staticmethod(
        lambda ctx, d: asked["maps"].append(ctx.needs_input_grad[:3]) or map_bwd(ctx, d)))
    ids = torch.randint(0, 97, (2, 70), generator=torch.Generator().manual_seed(1)).to(DEV)
    _, mse, _ = layer_losses(model, {"input_ids": ids}, DistillRecorder(xent=False))
    grads = torch.autograd.grad(sum(mse), params)
    assert asked["attention"] == [(False, False, False, True, True, True)] * 2
    assert asked["maps"] == [(False, True, False)] * 4
    assert all(g.abs().sum() > 0 for g in grads)
