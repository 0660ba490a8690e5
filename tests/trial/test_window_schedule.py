"""``attention.window_schedule``: the linearized layers get the scheduled windows and the efficiency follows."""

from lolsearch.attention.layer import LinearizedAttention
from lolsearch.config import AttentionConfig, ModelConfig
from lolsearch.models import load_model
from lolsearch.trial import efficiency
from lolsearch.trial.surgery import decoder_layers, linearize


def test_surgery_and_state_follow_the_window_schedule():
    model, _ = load_model(ModelConfig(source="toy-llama", toy={"layers": 4}))
    cfg = AttentionConfig(layout="sliding", window_schedule={"first": 4, "last": 16}, backend="torch",
                          feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}})
    report = linearize(model, cfg)
    assert [w for _, w in report.plan] == [4, 8, 12, 16]
    assert [layer.self_attn.window for layer in decoder_layers(model)] == [4, 8, 12, 16]
    assert all(isinstance(layer.self_attn, LinearizedAttention) for layer in decoder_layers(model))
    state = efficiency.analytic(model.config, list(report.plan), report.feature_dim, [4096])["state_bytes_4k"]
    flat = [efficiency.analytic(model.config, [("sliding", w)] * 4, report.feature_dim, [4096])["state_bytes_4k"]
            for w in (4, 16)]
    assert flat[0] < state < flat[1]
    explicit = AttentionConfig(layout="sliding", layers={i: {"layout": "sliding", "window": w}
                                                         for i, w in enumerate((4, 8, 12, 16))})
    assert explicit.layer_plan(4) == list(report.plan)
