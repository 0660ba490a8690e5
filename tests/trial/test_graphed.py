"""Static (graphable) decode step and left-padded batches, on the tiny random Llama (GQA: 4 query / 2 kv heads)."""


import pytest
import torch

from lolsearch.config import AttentionConfig, ModelConfig
from lolsearch.models import load_model
from lolsearch.trial.graphed import (
    GraphedStep,
    GraphError,
    StaticDecoder,
    graphed_generate,
    packed_decode_attention,
    prefill,
)
from lolsearch.trial.surgery import cache_kwarg, linearize, new_cache

LAYOUTS = [("sliding", 5), ("terrace", 4), ("linear", 0)]


def toy(layout: str, window: int, device: str = "cpu", **kw):
    model, tok = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), device)
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, backend="torch",
                                     chunk_size=16, layout=layout, window=window, **kw))
    return model, tok


def left_padded(lens: list[int], pad: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, 256, (n,), generator=g) for n in lens]
    t = max(lens)
    ids = torch.full((len(lens), t), pad)
    mask = torch.zeros(len(lens), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, t - len(r) :], mask[i, t - len(r) :] = r, 1
    return rows, ids, mask


def greedy(model, tok, ids, mask=None, n: int = 24):
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None, output_scores=True,
                             return_dict_in_generate=True)
    return out.sequences[:, ids.shape[1] :], torch.stack(out.scores, 1)


@pytest.mark.parametrize("layout,window,softmax_layers", [*[(*lw, ()) for lw in LAYOUTS], ("terrace", 4, (1,)),
                                                           ("sliding", 16, ())])
def test_left_padded_generate_equals_each_row_alone(layout, window, softmax_layers):
    """Rows of 13, 6 and 10 tokens; with window 16 every prompt is shorter than the window, where the static step's
    empty ring slots must stay out of the softmax."""
    model, tok = toy(layout, window, softmax_layers=softmax_layers)
    rows, ids, mask = left_padded([13, 6, 10], tok.pad_token_id)
    tokens, scores = greedy(model, tok, ids, mask)
    for i, row in enumerate(rows):
        alone, alone_scores = greedy(model, tok, row[None])
        assert torch.equal(tokens[i], alone[0]), f"row {i}"
        torch.testing.assert_close(scores[i], alone_scores[0], atol=1e-4, rtol=1e-4)
    # the graphed path (eager on CPU) decodes the padded batch the same (softmax layers: fixed KV buffers)
    assert torch.equal(graphed_generate(model, ids, mask, max_new_tokens=24)[:, ids.shape[1] :], tokens)


def test_right_padding_is_refused():
    model, tok = toy("sliding", 4)
    ids = torch.randint(3, 256, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, -2:] = 0
    with pytest.raises(ValueError, match="left padding only"):
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, pad_token_id=tok.pad_token_id)


@pytest.mark.parametrize("layout,window", LAYOUTS)
def test_static_step_equals_decode_path_over_ring_wraps(layout, window):
    """Teacher-forced tokens through the existing decode path and the static step: logits agree each step,
    over 4 turns of the ring buffer (C = w sliding, 2w terrace)."""
    model, _ = toy(layout, window)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 256, (2, 7 + 4 * 2 * max(window, 4)), generator=g)
    cache_ref, logits_ref = prefill(model, ids[:, :7], None)
    cache_static, logits_static = prefill(model, ids[:, :7], None)
    torch.testing.assert_close(logits_static, logits_ref)
    decoder = StaticDecoder(model, cache_static, ids[:, 7])
    kwarg = cache_kwarg(model)
    for t in range(7, ids.shape[1]):
        with torch.no_grad():
            ref = model(ids[:, t : t + 1], use_cache=True, **{kwarg: cache_ref}).logits[:, -1]
        decoder.tokens.copy_(ids[:, t : t + 1])
        got = decoder.step()
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4, msg=f"step {t}")
        assert torch.equal(decoder.pos, torch.full((2,), t + 1))


@pytest.mark.parametrize("layout,window,softmax_layers", [*[(*lw, ()) for lw in LAYOUTS], ("sliding", 4, (0,))])
def test_graphed_generate_eager_equals_generate(layout, window, softmax_layers):
    model, tok = toy(layout, window, softmax_layers=softmax_layers)
    ids = torch.randint(3, 256, (3, 9), generator=torch.Generator().manual_seed(0))
    tokens, _ = greedy(model, tok, ids, n=30)
    assert torch.equal(graphed_generate(model, ids, max_new_tokens=30)[:, 9:], tokens)


def test_graphing_needs_a_linearized_model_and_a_kv_budget_for_softmax_layers():
    teacher, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), "cpu")
    with pytest.raises(GraphError, match="no attention layer is linearized"):
        graphed_generate(teacher, torch.randint(3, 256, (1, 5)), max_new_tokens=3)
    model, _ = toy("sliding", 4, softmax_layers=(1,))
    cache, logits = prefill(model, torch.randint(3, 256, (1, 5)), None)
    with pytest.raises(GraphError, match=r"layers \[1\] are softmax: give new_tokens"):
        StaticDecoder(model, cache, logits.argmax(-1))


def test_packed_decode_attention_equals_sdpa_over_repeated_kv():
    """The softmax layers' graphed step: G query heads per KV head as rows of one SDPA call, masked per row."""
    g = torch.Generator().manual_seed(0)
    b, h, hkv, n, d = 3, 6, 2, 11, 8
    q, k, v = torch.randn(b, h, 1, d, generator=g), torch.randn(b, hkv, n, d, generator=g), torch.randn(b, hkv, n, d, generator=g)
    valid = torch.arange(n)[None, :] >= torch.tensor([[0], [3], [7]])  # left pads of 0, 3, 7 keys
    mask = torch.zeros(b, 1, 1, n).masked_fill_(~valid[:, None, None, :], torch.finfo(torch.float32).min)
    out, weights = packed_decode_attention(None, q, k, v, mask, scaling=0.3)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(h // hkv, 1),
                                                           v.repeat_interleave(h // hkv, 1), attn_mask=mask, scale=0.3)
    assert weights is None and out.shape == (b, 1, h, d)
    torch.testing.assert_close(out, ref.transpose(1, 2), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="one query token"):
        packed_decode_attention(None, q.expand(b, h, 2, d), k, v, None)


def test_graphed_decode_leaves_the_softmax_layers_config_as_it_was():
    model, _ = toy("sliding", 4, softmax_layers=(1,))
    before = model.config._attn_implementation
    graphed_generate(model, torch.randint(3, 256, (2, 6)), max_new_tokens=4)
    attn = model.model.layers[1].self_attn
    assert attn.config is model.config and model.config._attn_implementation == before


def test_static_cache_reports_its_length():
    model, tok = toy("sliding", 4)
    rows, ids, mask = left_padded([8, 5], tok.pad_token_id)
    cache = new_cache(model)
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
                       pad_token_id=tok.pad_token_id, eos_token_id=None, **{cache_kwarg(model, generate=True): cache})
    assert cache.get_seq_length() == 8 + 5 - 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout,window,softmax_layers", [*[(*lw, ()) for lw in LAYOUTS], ("terrace", 4, (0,))])
def test_cuda_graph_replay_equals_eager(layout, window, softmax_layers):
    model, tok = toy(layout, window, device="cuda", softmax_layers=softmax_layers)
    rows, ids, mask = left_padded([11, 4, 9], tok.pad_token_id)
    ids, mask = ids.cuda(), mask.cuda()
    eager = graphed_generate(model, ids, mask, max_new_tokens=40, graph=False)
    graphed = graphed_generate(model, ids, mask, max_new_tokens=40, graph=True)
    assert torch.equal(graphed, eager)
    tokens, _ = greedy(model, tok, ids, mask, n=40)
    assert torch.equal(eager[:, ids.shape[1] :], tokens)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("layout,window", LAYOUTS)
def test_cuda_triton_static_step_equals_torch_step(layout, window):
    """The fused Triton static step (triton backend) against the PyTorch static step, teacher-forced, graphed."""
    ids = torch.randint(3, 256, (3, 7 + 4 * 2 * max(window, 4)), generator=torch.Generator().manual_seed(4)).cuda()
    logits = {}
    for backend in ("triton", "torch"):
        model, _ = toy(layout, window, device="cuda")
        for m in model.modules():
            if hasattr(m, "backend"):
                m.backend = backend
        cache, _ = prefill(model, ids[:, :7], None)
        decoder = StaticDecoder(model, cache, ids[:, 7])
        step = GraphedStep(decoder)
        out = []
        for t in range(7, ids.shape[1]):
            decoder.tokens.copy_(ids[:, t : t + 1])
            out.append(step().clone())
        logits[backend] = torch.stack(out, 1)
    torch.testing.assert_close(logits["triton"], logits["torch"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("window", [6, None])
def test_softmax_layers_of_a_sliding_window_teacher_decode_within_their_window(window):
    """A Mistral teacher's kept softmax layer attends to its last ``window`` keys: the graphed decode (eager on CPU)
    continues a prompt with the tokens the full forward of the whole sequence predicts, past the window."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, sliding_window=window, attn_implementation="sdpa")
    model = MistralForCausalLM(cfg).eval()
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, backend="torch",
                                     chunk_size=16, layout="sliding", window=4, softmax_layers=(1,)))
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(4))
    out = graphed_generate(model, ids, None, max_new_tokens=14)
    with torch.no_grad():
        full = model(out, use_cache=False).logits  # [B, 19, V]: the softmax layer masked by transformers
    assert torch.equal(full[:, 4:-1].argmax(-1), out[:, 5:])
