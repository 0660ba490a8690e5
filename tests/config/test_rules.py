"""Rule-valued design keys: softmax_rule, window_schedule, LoRA rank_by_layer (config side, no torch)."""

import pytest

from lolsearch.config import AttentionConfig, parse_trial_config
from lolsearch.config.rules import WindowSchedule
from lolsearch.core.errors import ConfigError


def test_window_schedule_is_linear_in_depth_and_feeds_the_layer_plan():
    assert WindowSchedule(first=64, last=256).windows(4) == [64, 128, 192, 256]
    assert WindowSchedule(first=64, last=256, multiple=64).windows(3) == [64, 128, 256]  # 160 → 2.5·64, half to even
    assert WindowSchedule(first=8, last=100, multiple=32).windows(2) == [32, 96]  # never below one multiple
    assert WindowSchedule(first=32, last=8).windows(1) == [32]
    a = AttentionConfig(layout="sliding", window_schedule={"first": 16, "last": 64}, softmax_layers=(1,),
                        layers={3: {"layout": "terrace", "window": 8}, 2: {"layout": "linear"}})
    assert a.layer_plan(5) == [("sliding", 16), ("softmax", 28), ("linear", 0), ("terrace", 8), ("sliding", 64)]


def test_window_schedule_must_fit_the_sequence():
    with pytest.raises((ConfigError, ValueError), match="window_schedule"):
        parse_trial_config({"data": {"seq_len": 128}, "attention": {"window_schedule": {"first": 64, "last": 256}}})


def test_softmax_rule_zero_is_kept_as_drawn():
    off = parse_trial_config({"attention": {"softmax_rule": {"top_mse": 0}}})
    assert off.attention.softmax_rule.top_mse == 0  # a searched 0 stays in the config (the probe is skipped)
    on = parse_trial_config({"attention": {"softmax_rule": {"top_mse": 2}}})
    assert on.attention.softmax_rule.top_mse == 2 and on.attention.softmax_rule.probe_batches == 4
