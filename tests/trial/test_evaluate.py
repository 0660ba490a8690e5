"""Quality metrics on a tiny random Llama: perplexity vs HF's loss, teacher agreement, attention MSE, MC, lm-eval."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lolsearch.config import AttentionConfig
from lolsearch.models import byte_tokenizer
from lolsearch.trial import evaluate
from lolsearch.trial.surgery import linearize

DATA = Path(__file__).resolve().parents[1] / "data"
VOCAB = 100

pytestmark = pytest.mark.usefixtures("one_thread")


def toy(vocab: int = VOCAB, layers: int = 3, init: float = 0.2) -> LlamaForCausalLM:
    """Tiny Llama (4 q / 2 kv heads, D 16); a large init range makes next-token distributions peaked."""
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      initializer_range=init, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


def attention(layout: str, window: int, **kw) -> AttentionConfig:
    return AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, layout=layout,
                           window=window, backend="torch", chunk_size=8, **kw)


def batches(n: int = 2, b: int = 2, t: int = 24, seed: int = 1, mask: bool = True) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(VOCAB, (b, t), generator=gen)
        labels = ids.clone()
        if mask:
            labels[:, :5] = -100  # e.g. a masked prompt
        out.append({"input_ids": ids, "labels": labels})
    return out


def test_perplexity_equals_exp_of_hf_loss():
    model = toy()
    (batch,) = batches(n=1)
    with torch.no_grad():
        loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert evaluate.perplexity(model, [batch]) == pytest.approx(math.exp(loss.item()), rel=1e-5)


def test_perplexity_is_token_weighted_across_batches():
    model = toy()
    b1 = batches(n=1, seed=1)[0]
    b2 = batches(n=1, seed=2, mask=False)[0]
    with torch.no_grad():
        l1 = model(input_ids=b1["input_ids"], labels=b1["labels"]).loss.item()
        l2 = model(input_ids=b2["input_ids"], labels=b2["labels"]).loss.item()
    n1 = int((b1["labels"][:, 1:] != -100).sum())
    n2 = int((b2["labels"][:, 1:] != -100).sum())
    assert n1 != n2
    expected = math.exp((n1 * l1 + n2 * l2) / (n1 + n2))
    assert evaluate.perplexity(model, [b1, b2]) == pytest.approx(expected, rel=1e-5)


def test_eval_restores_training_flag():
    model = toy()
    linearize(model, attention("sliding", 4))
    model.train()
    evaluate.perplexity(model, batches(n=1))
    evaluate.teacher_agreement(model, batches(n=1))
    evaluate.attention_mse(model, batches(n=1))
    assert model.training


def test_teacher_agreement_of_exact_window_is_perfect():
    model = toy()
    linearize(model, attention("sliding", 4096, softmax_layers=(1,)))  # window >= T: exactly softmax
    m = evaluate.teacher_agreement(model, batches())
    assert m["kl_teacher"] == pytest.approx(0.0, abs=1e-7)
    assert m["top1_agree"] == 1.0


def test_teacher_agreement_of_small_window_differs():
    model = toy()
    linearize(model, attention("sliding", 2))
    m = evaluate.teacher_agreement(model, batches())
    assert m["kl_teacher"] > 1e-4
    assert 0.0 <= m["top1_agree"] <= 1.0


def test_teacher_agreement_matches_separate_teacher_model():
    teacher = toy()
    student = toy()
    linearize(student, attention("terrace", 2))
    data = batches(n=1)
    m = evaluate.teacher_agreement(student, data)
    ids, labels = data[0]["input_ids"], data[0]["labels"]
    with torch.no_grad():
        lt = teacher(input_ids=ids).logits[:, :-1].float().log_softmax(-1)
        ls = student(input_ids=ids).logits[:, :-1].float().log_softmax(-1)
    keep = labels[:, 1:] != -100
    kl = (lt.exp() * (lt - ls)).sum(-1)[keep].mean().item()
    top1 = (lt.argmax(-1) == ls.argmax(-1))[keep].float().mean().item()
    assert m["kl_teacher"] == pytest.approx(kl, rel=1e-4)
    assert m["top1_agree"] == pytest.approx(top1)


def test_teacher_agreement_sees_lora_through_peft():
    peft = pytest.importorskip("peft")
    model = toy()
    linearize(model, attention("sliding", 4096))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    assert evaluate.teacher_agreement(wrapped, batches(n=1))["kl_teacher"] == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    assert evaluate.teacher_agreement(wrapped, batches(n=1))["kl_teacher"] > 1e-4  # teacher = adapters off
    mean, per_layer = evaluate.attention_mse(wrapped, batches(n=1))
    assert len(per_layer) == 3 and mean == pytest.approx(0.0, abs=1e-10)


def test_attention_mse_zero_for_exact_window():
    model = toy()
    linearize(model, attention("sliding", 4096, softmax_layers=(1,)))
    mean, per_layer = evaluate.attention_mse(model, batches())
    assert len(per_layer) == 2
    assert mean == pytest.approx(0.0, abs=1e-10)
    assert max(per_layer) < 1e-10


def test_attention_mse_positive_for_small_window_and_layer_ordered():
    model = toy()
    linearize(model, attention("linear", 0, softmax_layers=(0,)))
    data = batches()
    mean, per_layer = evaluate.attention_mse(model, data)
    assert len(per_layer) == 2 and all(v > 0 for v in per_layer)
    assert mean == pytest.approx(sum(per_layer) / 2)
    # Layer order: making layer 2 exact (window >= T) must zero the second entry only.
    model2 = toy()
    linearize(model2, attention("linear", 0, softmax_layers=(0,), layers={2: {"layout": "sliding", "window": 4096}}))
    _, per_layer2 = evaluate.attention_mse(model2, data)
    assert per_layer2[0] == pytest.approx(per_layer[0], rel=1e-5)
    assert per_layer2[1] == pytest.approx(0.0, abs=1e-10)


def test_attention_mse_needs_linearized_layers():
    with pytest.raises(ValueError, match="no linearized layers"):
        evaluate.attention_mse(toy(), batches(n=1))


def test_load_mc_task_reads_both_key_styles_and_limit():
    items = evaluate.load_mc_task(DATA / "mc_example.jsonl")
    assert [i.label for i in items] == [0, 1, 0]
    assert items[1].context == "Two plus two equals" and len(items[1].choices) == 4
    assert len(evaluate.load_mc_task(DATA / "mc_example.jsonl", limit=2)) == 2


@pytest.mark.parametrize("line, key", [
    ('{"context": "a", "choices": ["x"], "label": 0}', "choices"),
    ('{"context": "a", "choices": ["x", "y"], "label": 2}', "label"),
    ('{"choices": ["x", "y"], "label": 0}', "context"),
    ("not json", "invalid JSON"),
])
def test_load_mc_task_bad_line_names_file_and_line(tmp_path, line, key):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"context": "a", "choices": ["x", "y"], "label": 0}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl:2: {key}"):
        evaluate.load_mc_task(path)


def test_choice_logliks_match_one_forward_per_choice():
    tok = byte_tokenizer()
    model = toy(vocab=len(tok))
    for item in evaluate.load_mc_task(DATA / "mc_example.jsonl"):
        conts = [" " + c for c in item.choices]
        with torch.no_grad():
            got = evaluate.choice_logliks(model, tok, item.context, conts)
            for cont, score in zip(conts, got, strict=True):
                ctx = tok(item.context)["input_ids"]
                ids = torch.tensor([tok(item.context + cont)["input_ids"]])
                lp = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
                ref = lp[torch.arange(len(ctx) - 1, ids.shape[1] - 1), ids[0, len(ctx):]].sum().item()
                assert score == pytest.approx(ref, rel=1e-5)


def test_multiple_choice_picks_the_greedy_continuation(tmp_path):
    tok = byte_tokenizer()
    model = toy(vocab=len(tok))
    letters = torch.tensor([ord(c) for c in "abcdefghijklmnopqrstuvwxyz"])
    gen = torch.Generator().manual_seed(3)
    rows = []
    for context in ["Once upon", "To be or", "Hark"]:
        ids = torch.tensor([tok(context + " ")["input_ids"]])
        greedy = []
        with torch.no_grad():
            for _ in range(5):  # greedy over lowercase letters, so the text round-trips through the tokenizer
                nxt = letters[model(input_ids=ids).logits[0, -1, letters].argmax()]
                greedy.append(chr(int(nxt)))
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        distractors = ["".join(chr(int(letters[i])) for i in torch.randint(26, (5,), generator=gen)) for _ in range(3)]
        label = len(rows) % 4
        choices = distractors[:label] + ["".join(greedy)] + distractors[label:]
        rows.append({"context": context, "choices": choices, "label": label})
    path = tmp_path / "greedy-task.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert evaluate.multiple_choice(model, tok, str(path)) == {"mc_greedy_task_acc": 1.0, "mc_greedy_task_acc_norm": 1.0}
    # The same items with the labels moved off the greedy choice score 0.
    for r in rows:
        r["label"] = (r["label"] + 1) % 4
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert evaluate.multiple_choice(model, tok, str(path))["mc_greedy_task_acc"] == 0.0


def test_lm_eval_missing_is_one_line_runtime_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(RuntimeError, match="lm-eval is not installed") as info:
        evaluate.lm_eval(toy(), byte_tokenizer(), ["arc_easy"], limit=2)
    assert "\n" not in str(info.value)


def test_flatten_lm_eval_results():
    results = {
        "arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.75},
        "gsm8k": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A"},
    }
    assert evaluate.flatten_lm_eval(results) == {
        "lm_eval_arc_easy_acc": 0.5, "lm_eval_arc_easy_acc_stderr": 0.1, "lm_eval_arc_easy_acc_norm": 0.75,
        "lm_eval_gsm8k_exact_match_strict-match": 0.25,
    }
