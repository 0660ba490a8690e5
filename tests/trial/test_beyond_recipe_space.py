"""spaces/beyond_recipe.yaml: its constraints keep every runnable point's analytic state at 32K ≤ 1/8 of the KV cache."""

from pathlib import Path

from transformers import LlamaConfig

from lolsearch.search.space import load_space
from lolsearch.trial import efficiency

SPACE = Path(__file__).resolve().parents[2] / "spaces" / "beyond_recipe.yaml"
# SmolLM2-135M's attention shape: 30 layers, 9 query / 3 KV heads, head_dim 64
SMOLLM2 = LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576)


def _worst_state_ratio(cfg) -> float:
    """state_ratio_32k with the rule's layers kept as softmax (which ones does not change the bytes)."""
    a = cfg.attention
    k = a.softmax_rule.top_mse if a.softmax_rule else 0
    plan = [(layout, w) for layout, w in a.model_copy(update={"softmax_rule": None}).layer_plan(30)]
    order = sorted(range(30), key=lambda i: plan[i][1])  # the smallest windows become softmax: the worst case
    for i in order[:k]:
        plan[i] = ("softmax", 0)
    feature_dim = 2 * a.feature_map.params["feature_dim"]  # Hedgehog: [softmax(xW), softmax(-xW)]
    return efficiency.analytic(SMOLLM2, plan, feature_dim, [32768], kv_dtype_bytes=2)["state_ratio_32k"]


def test_constraints_cap_the_state_at_one_eighth():
    space = load_space(SPACE)
    points = space.sample_points(300, seed=1)
    ratios = [_worst_state_ratio(p.config) for p in points]
    assert max(ratios) <= 1 / 8, max(ratios)
    assert max(ratios) > 0.11  # the cap binds: 3 softmax layers fit, close to the limit
    assert {p.config.attention.softmax_rule.top_mse if p.config.attention.softmax_rule else 0 for p in points} == {0, 1, 2, 3}
    assert max(p.config.distill.tokens for p in points) <= 6_600_000 and max(p.config.finetune.tokens for p in points) <= 6_600_000
    assert space.num_trials() >= 48


def test_a_sampled_plan_launches_no_per_trial_teacher_baselines():
    """Its finetune keys are searched, so every planned point needs its own teacher-with-LoRA baseline: a sweep
    must not queue the guessed plan's 48 baseline tasks ahead of the trials (they starved every trial on the H200)."""
    import torch

    from lolsearch.trial.baselines import distinct_baselines

    plan = load_space(SPACE).plan(8)
    cpu = torch.device("cpu")
    assert len(distinct_baselines(plan, cpu)) > 1
    assert distinct_baselines(plan, cpu, shared_by_all=True) == []
    same = [plan[0].model_copy(update={"seed": plan[0].seed}) for _ in range(3)]
    assert len(distinct_baselines(same, cpu, shared_by_all=True)) == 1
