"""Per-layer γ and window share on the toy model: the window share matches the normalized reference weights, is 1
when the window covers every key, and moves with γ."""

from __future__ import annotations

import pytest
import torch

from lolsearch.attention.chunked import expand_kv
from lolsearch.attention.reference import hybrid_attention_weights_reference, hybrid_masks
from lolsearch.config import AttentionConfig, ModelConfig
from lolsearch.models import load_model
from lolsearch.trial.diagnostics import gamma_by_layer, window_share_by_layer
from lolsearch.trial.surgery import linearize, linearized_layers


def _model(**attention):
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"))
    linearize(model, AttentionConfig(**{"backend": "torch", **attention}))
    return model


def _batch(t: int = 48) -> list[dict]:
    return [{"input_ids": torch.randint(0, 256, (2, t), generator=torch.Generator().manual_seed(0))}]


def test_share_matches_reference_weights():
    model = _model(layout="sliding", window=8, gamma_init=0.3)
    shares = window_share_by_layer(model, _batch())
    assert len(shares) == 2 and all(0.0 < s < 1.0 for s in shares)
    layer = min(linearized_layers(model), key=lambda m: m.layer_idx)
    captured = {}
    hook = layer.register_forward_hook(lambda m, a, kw, o: captured.update(kw), with_kwargs=True)
    with torch.no_grad():
        model(input_ids=_batch()[0]["input_ids"][:1])
    hook.remove()
    with torch.no_grad():
        q, k, _ = layer._qkv(captured["hidden_states"], captured["position_embeddings"])
        phi_q, phi_k = layer._features(q, k)
        w = hybrid_attention_weights_reference(q, expand_kv(k, layer.num_heads), phi_q, phi_k, layer.gamma, 8, "sliding")
    soft, _ = hybrid_masks(48, 48, 8, "sliding")
    assert shares[0] == pytest.approx(float((w * soft).sum(-1).mean()), rel=1e-4)


def test_share_is_one_when_the_window_covers_everything_and_zero_for_linear():
    assert window_share_by_layer(_model(layout="sliding", window=64), _batch()) == pytest.approx([1.0, 1.0])
    assert window_share_by_layer(_model(layout="linear"), _batch()) == [0.0, 0.0]


def test_share_grows_with_gamma():
    low = window_share_by_layer(_model(layout="terrace", window=8, gamma_init=0.01), _batch())
    high = window_share_by_layer(_model(layout="terrace", window=8, gamma_init=0.99), _batch())
    assert all(h > lo for h, lo in zip(high, low, strict=True))
    assert gamma_by_layer(_model(layout="terrace", window=8, gamma_init=0.25)) == pytest.approx([0.25, 0.25])
