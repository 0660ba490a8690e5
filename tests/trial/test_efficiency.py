"""Analytic state/FLOP accounting against hand-computed numbers; measured cache size against the analytic one."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lolsearch.config import AttentionConfig, EfficiencyConfig
from lolsearch.trial import efficiency
from lolsearch.trial.surgery import linearize

GIB, MIB = 2**30, 2**20
CONTEXTS = [4096, 32768, 131072]

pytestmark = pytest.mark.usefixtures("one_thread")


def llama3_8b() -> LlamaConfig:
    return LlamaConfig(num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, hidden_size=4096,
                       intermediate_size=14336, vocab_size=128256)


def smollm2() -> LlamaConfig:
    return LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                       intermediate_size=1536, vocab_size=49152)


def test_context_suffix():
    assert [efficiency.context_suffix(n) for n in (4096, 32768, 131072, 256, 1000, 1536)] == [
        "4k", "32k", "128k", "256", "1000", "1536"]


def test_llama3_8b_teacher_kv_and_linear_state():
    a = efficiency.analytic(llama3_8b(), [("linear", 0)] * 32, 128, CONTEXTS, proj_dim=64)
    assert a["kv_bytes_teacher_32k"] == 4 * GIB  # 32 layers x 32768 x 8 kv heads x 128 x (k, v) x 2 B
    assert a["kv_bytes_teacher_4k"] == GIB // 2 and a["kv_bytes_teacher_128k"] == 16 * GIB
    per_layer = 32 * (128 * 128 + 128) * 4  # 2,113,536 B = 2.02 MiB
    assert per_layer == 2_113_536 and per_layer / MIB == pytest.approx(2.0156, abs=1e-4)
    for s in ("4k", "32k", "128k"):  # pure linear: no window, constant in L (64.5 MiB / sequence)
        assert a[f"state_bytes_{s}"] == 32 * per_layer == 67_633_152
    assert a["state_ratio_32k"] == pytest.approx(67_633_152 / (4 * GIB))
    assert a["teacher_attn_flops_per_token_32k"] == 32 * 32 * 4 * 32768 * 128 == 17_179_869_184
    # linear: per head 4FD (state) + 2*2*D*F' (feature maps) = 65,536 + 32,768
    assert a["attn_flops_per_token_32k"] == 32 * 32 * (65_536 + 32_768)


def test_llama3_8b_terrace_with_softmax_layers():
    cfg = AttentionConfig(layout="terrace", window=64, softmax_layers=(7, 15, 23, 31))
    a = efficiency.analytic(llama3_8b(), cfg.layer_plan(32), 128, CONTEXTS, proj_dim=64)
    window = 128 * 8 * 128 * 2 * 2  # terrace keeps 2w = 128 keys at the 8 kv heads: 0.5 MiB
    softmax_32k = 32768 * 8 * 128 * 2 * 2  # 128 MiB per softmax layer
    assert a["state_bytes_32k"] == 28 * (2_113_536 + window) + 4 * softmax_32k == 610_729_984
    per_head_lin = 4 * 128 * 128 + 4 * 128 * 128 + 4 * 128 * 64  # window + state + feature maps = 163,840
    per_head_soft = 4 * 32768 * 128
    assert a["attn_flops_per_token_32k"] == 32 * (28 * per_head_lin + 4 * per_head_soft)


def test_smollm2_hedgehog_terrace_64():
    a = efficiency.analytic(smollm2(), [("terrace", 64)] * 30, 128, CONTEXTS, proj_dim=64)
    per_layer = 9 * (128 * 64 + 128) * 4 + 128 * 3 * 64 * 2 * 2  # 299,520 state + 98,304 window
    assert per_layer == 397_824
    assert a["state_bytes_4k"] == a["state_bytes_32k"] == a["state_bytes_128k"] == 11_934_720
    assert a["kv_bytes_teacher_4k"] == 94_371_840 and a["kv_bytes_teacher_32k"] == 754_974_720  # 720 MiB
    assert a["state_ratio_32k"] == pytest.approx(0.0158081, rel=1e-5)
    assert a["teacher_attn_flops_per_token_4k"] == 283_115_520
    assert a["attn_flops_per_token_4k"] == 30 * 9 * (32_768 + 32_768 + 16_384) == 22_118_400


def test_short_context_window_holds_only_the_tokens_seen():
    a = efficiency.analytic(smollm2(), [("sliding", 64)] * 29 + [("softmax", 64)], 128, [16, 64, 100],
                            kv_dtype_bytes=4, proj_dim=64)
    tok = 3 * 64 * 2 * 4
    state = 9 * (128 * 64 + 128) * 4
    assert a["state_bytes_16"] == 29 * (state + 16 * tok) + 16 * tok
    assert a["state_bytes_100"] == 29 * (state + 64 * tok) + 100 * tok
    assert a["attn_flops_per_token_16"] == 9 * (29 * (4 * 16 * 64 + 4 * 128 * 64 + 4 * 64 * 64) + 4 * 16 * 64)


def test_proj_dim_defaults_to_feature_dim_and_plan_must_match():
    with_default = efficiency.analytic(smollm2(), [("linear", 0)] * 30, 128, [4096])
    explicit = efficiency.analytic(smollm2(), [("linear", 0)] * 30, 128, [4096], proj_dim=128)
    assert with_default == explicit
    with pytest.raises(ValueError, match="29 entries for a 30-layer"):
        efficiency.analytic(smollm2(), [("linear", 0)] * 29, 128, [4096])


@pytest.mark.parametrize("kind, params, expected", [
    ("hedgehog", {"feature_dim": 64}, 64), ("t2r", {"feature_dim": 32}, 32), ("performer", {"feature_dim": 16}, 16),
    ("elu", {}, 0), ("taylor2", {}, 0),
])
def test_feature_projection_dim(kind, params, expected):
    assert efficiency.feature_projection_dim(kind, params, 64) == expected


def toy() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


def linearized(layout: str, window: int, **kw):
    model = toy()
    rep = linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}},
                                           layout=layout, window=window, backend="torch", chunk_size=8, **kw))
    return model, rep


def run(model, context: int, tokens: int, **kw) -> dict:
    cfg = EfficiencyConfig(prefill_lengths=(32,), decode_context=context, decode_tokens=tokens, **kw)
    return efficiency.measure(model, cfg, "cpu", 100, repeats=1)


def analytic_at(model, rep, context: int) -> dict:
    return efficiency.analytic(model.config, list(rep.plan), rep.feature_dim, [context], kv_dtype_bytes=4, proj_dim=8)


def test_measure_reports_flat_positive_numbers_and_restores_mode():
    model, _ = linearized("terrace", 8)
    model.train()
    m = run(model, context=24, tokens=4, batch_size=2)
    assert set(m) == {"prefill_tok_s_32", "decode_tok_s", "peak_mem_mb", "measured_state_bytes",
                      "measured_state_bytes_used", "measured_state_context"}
    assert all(isinstance(v, (int, float)) and v > 0 for v in m.values())
    assert m["measured_state_context"] == 24 + 4 - 1  # the last generated token is never fed back
    assert model.training


@pytest.mark.parametrize("layout, window, softmax_layers", [
    ("sliding", 8, ()), ("terrace", 4, (0, 2)), ("linear", 0, (1,)),
])
def test_measured_cache_equals_analytic_beyond_the_window(layout, window, softmax_layers):
    model, rep = linearized(layout, window, softmax_layers=softmax_layers)
    m = run(model, context=40, tokens=10)
    ctx = m["measured_state_context"]
    assert ctx == 49
    assert m["measured_state_bytes"] == analytic_at(model, rep, ctx)[f"state_bytes_{ctx}"]


def test_measured_cache_below_the_window():
    model, rep = linearized("sliding", 64)
    m = run(model, context=20, tokens=10)
    ctx = m["measured_state_context"]
    # Occupied slots = the 29 tokens seen; the ring buffer itself is allocated at full capacity (64).
    assert m["measured_state_bytes_used"] == analytic_at(model, rep, ctx)[f"state_bytes_{ctx}"]
    assert m["measured_state_bytes"] == analytic_at(model, rep, 64)["state_bytes_64"]
    assert m["measured_state_bytes"] > m["measured_state_bytes_used"]


@pytest.mark.parametrize("layout, window", [("sliding", 8), ("terrace", 8)])
def test_measured_cache_does_not_grow_with_generated_tokens(layout, window):
    model, rep = linearized(layout, window)
    short, long = run(model, context=24, tokens=10), run(model, context=24, tokens=200)
    assert long["measured_state_context"] - short["measured_state_context"] == 190
    assert long["measured_state_bytes"] == short["measured_state_bytes"]
    assert long["measured_state_bytes"] == analytic_at(model, rep, long["measured_state_context"])[
        f"state_bytes_{long['measured_state_context']}"]


def test_teacher_cache_grows_like_the_analytic_kv_cache():
    model = toy()
    for tokens in (10, 50):
        m = run(model, context=24, tokens=tokens)
        ctx = m["measured_state_context"]
        plan = [("softmax", 0)] * 3
        a = efficiency.analytic(model.config, plan, 8, [ctx], kv_dtype_bytes=4)
        assert m["measured_state_bytes"] == a[f"kv_bytes_teacher_{ctx}"] == a[f"state_bytes_{ctx}"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_measure_on_cuda_bf16(backend):
    model = toy().to("cuda", torch.bfloat16)
    rep = linearize(model, AttentionConfig(layout="terrace", window=16, softmax_layers=(1,), backend=backend))
    m = efficiency.measure(model, EfficiencyConfig(prefill_lengths=(256, 1024), decode_context=300, decode_tokens=20),
                           "cuda", 100, repeats=2)
    assert {"prefill_tok_s_256", "prefill_tok_s_1k", "decode_tok_s", "peak_mem_mb"} <= set(m)
    assert m["peak_mem_mb"] > 0 and m["decode_tok_s"] > 0
    ctx = m["measured_state_context"]
    a = efficiency.analytic(model.config, list(rep.plan), rep.feature_dim, [ctx], kv_dtype_bytes=2)
    assert m["measured_state_bytes"] == a[f"state_bytes_{ctx}"]
