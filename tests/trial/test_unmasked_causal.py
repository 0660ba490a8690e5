"""Training forwards build no attention mask: no host sync in eager steps, no materialized mask in captured ones."""

import pytest
import torch
import transformers.masking_utils as masking_utils
from peft import LoraConfig, get_peft_model

from lolsearch.config import AttentionConfig, ModelConfig
from lolsearch.models import load_model
from lolsearch.trial.distill import layer_losses
from lolsearch.trial.finetune import lm_loss
from lolsearch.trial.surgery import DistillRecorder, linearize, unmasked_causal


@pytest.fixture
def spies(monkeypatch):
    """Counts transformers' packed-sequence scans and records each SDPA call's (mask given, is_causal)."""
    seen = {"packed_scans": 0, "sdpa": []}
    scan, sdpa = masking_utils.find_packed_sequence_indices, torch.nn.functional.scaled_dot_product_attention

    def counting_scan(*args, **kwargs):
        seen["packed_scans"] += 1
        return scan(*args, **kwargs)

    def recording_sdpa(*args, attn_mask=None, is_causal=False, **kwargs):
        seen["sdpa"].append((attn_mask is not None, is_causal))
        return sdpa(*args, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(masking_utils, "find_packed_sequence_indices", counting_scan)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    return seen


def toy(softmax_layers: tuple[int, ...] | None):
    """A 3-layer toy-llama: the softmax teacher (None) or linearized with ``softmax_layers`` kept as softmax."""
    torch.manual_seed(0)
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 3}))
    if softmax_layers is not None:
        linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, layout="sliding",
                                         window=4, backend="torch", chunk_size=16, softmax_layers=softmax_layers))
    return model


def batch() -> dict:
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(3))
    return {"input_ids": ids, "labels": ids}


@pytest.mark.parametrize("softmax_layers", [None, (1,)])
def test_same_logits_without_scan_or_mask(spies, softmax_layers):
    model = toy(softmax_layers)
    ids = batch()["input_ids"]
    with torch.no_grad():
        plain = model(input_ids=ids, use_cache=False).logits
        assert spies["packed_scans"] == 1  # the scan whose result an eager step reads back
        spies["sdpa"].clear()
        with unmasked_causal(model, ids.shape[1]):
            fast = model(input_ids=ids, use_cache=False).logits
    assert spies["packed_scans"] == 1
    assert spies["sdpa"] and set(spies["sdpa"]) == {(False, True)}  # every softmax layer: no mask, is_causal
    assert torch.equal(plain, fast)
    assert model.config._attn_implementation == "sdpa"


def test_traced_forward_gets_no_mask(spies, monkeypatch):
    """Under capture or compile transformers cannot read the scan's result and builds a full mask; inside the
    block the softmax layers still run causal SDPA with no mask, to the same logits."""
    model = toy(None)
    ids = batch()["input_ids"]
    with torch.no_grad():
        plain = model(input_ids=ids, use_cache=False).logits
        monkeypatch.setattr(masking_utils, "is_tracing", lambda *a, **k: True)
        spies["sdpa"].clear()
        masked = model(input_ids=ids, use_cache=False).logits
        assert set(spies["sdpa"]) == {(True, False)}
        spies["sdpa"].clear()
        with unmasked_causal(model, ids.shape[1]):
            fast = model(input_ids=ids, use_cache=False).logits
    assert set(spies["sdpa"]) == {(False, True)}
    torch.testing.assert_close(masked, plain)
    assert torch.equal(fast, plain)


def test_training_losses_build_no_mask(spies):
    """The forwards every stage trains and validates on: LoRA's loss (chunked and whole) and attention transfer's."""
    model = toy((1,))
    b = batch()
    layer_losses(model, b, DistillRecorder())
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    whole, chunked = lm_loss(peft_model, b), lm_loss(peft_model, b, chunk_tokens=16)
    chunked.backward()
    assert spies["packed_scans"] == 0
    assert spies["sdpa"] and all(call == (False, True) for call in spies["sdpa"])
    torch.testing.assert_close(whole, chunked)


def test_padding_inside_the_block_raises():
    model = toy(None)
    ids = batch()["input_ids"]
    with unmasked_causal(model, ids.shape[1]), pytest.raises(ValueError, match="attention_mask"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    assert model.config._attn_implementation == "sdpa"
    model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)  # outside it, padding masks work as before


@pytest.mark.parametrize("window,swapped", [(4, False), (64, True)])
def test_sliding_window_teachers_keep_their_mask_when_the_window_is_shorter(spies, window, swapped):
    """Mistral's sliding window reaches SDPA only through the mask: below the sequence length it is kept."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=16, sliding_window=window, attn_implementation="sdpa")
    model = MistralForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = model(input_ids=ids, use_cache=False).logits
        spies["sdpa"].clear()
        with unmasked_causal(model, ids.shape[1]):
            assert (model.config._attn_implementation != "sdpa") == swapped
            inside = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(inside, plain)
    assert set(spies["sdpa"]) == ({(False, True)} if swapped else {(True, False)})
