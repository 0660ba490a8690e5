"""Per-process trial caches: the teacher comes back as an independent pristine copy; the efficiency
measurement is reused for the same shape and repeated for another."""

import pytest
import torch

from lolsearch.config import AttentionConfig, EfficiencyConfig, ModelConfig
from lolsearch.trial import cache
from lolsearch.trial.surgery import linearize

TOY = ModelConfig(source="toy-llama", toy={"layers": 1})


@pytest.fixture(autouse=True)
def _empty():
    cache.clear()
    yield
    cache.clear()


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_teacher_is_a_fresh_copy_each_time():
    a, tok_a = cache.teacher(TOY, "cpu")
    reference = {k: v.clone() for k, v in a.state_dict().items()}
    with torch.no_grad():
        next(a.parameters()).add_(1.0)  # a trial modifies its model in place
    b, tok_b = cache.teacher(TOY, "cpu")
    assert b is not a and tok_b is tok_a and not b.training
    assert all(torch.equal(b.state_dict()[k], v) for k, v in reference.items())
    other, _ = cache.teacher(ModelConfig(source="toy-llama", toy={"layers": 2}), "cpu")
    assert other.config.num_hidden_layers == 2


def _student(window: int, seed: int) -> torch.nn.Module:
    model, _ = cache.teacher(TOY, "cpu")
    torch.manual_seed(seed)
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, window=window,
                                     backend="torch"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # trained values differ between trials
    return model


def test_efficiency_is_measured_once_per_shape():
    calls = []

    def measure(model, cfg, device, vocab):
        calls.append(model)
        return {"decode_tok_s": float(len(calls))}

    cfg = EfficiencyConfig()
    first, hit = cache.efficiency(_student(8, 0), cfg, "cpu", 259, measure)
    again, hit_again = cache.efficiency(_student(8, 1), cfg, "cpu", 259, measure)
    assert (hit, hit_again, len(calls)) == (False, True, 1) and again == first
    _, hit_window = cache.efficiency(_student(16, 0), cfg, "cpu", 259, measure)
    _, hit_cfg = cache.efficiency(_student(8, 0), EfficiencyConfig(decode_tokens=8), "cpu", 259, measure)
    assert not hit_window and not hit_cfg and len(calls) == 3


def test_efficiency_is_shared_through_the_cache_folder():
    """Another worker (here: this process with its memory emptied) reuses the file; clear() removes it."""
    calls = []

    def measure(model, cfg, device, vocab):
        calls.append(model)
        return {"decode_tok_s": 12.5, "peak_mem_mb": float("nan")}

    first, hit = cache.efficiency(_student(8, 0), EfficiencyConfig(), "cpu", 259, measure)
    cache._EFFICIENCY.clear()
    again, hit_again = cache.efficiency(_student(8, 1), EfficiencyConfig(), "cpu", 259, measure)
    assert (hit, hit_again, len(calls)) == (False, True, 1) and again["decode_tok_s"] == 12.5
    cache.clear()
    _, hit_after_clear = cache.efficiency(_student(8, 2), EfficiencyConfig(), "cpu", 259, measure)
    assert not hit_after_clear and len(calls) == 2
