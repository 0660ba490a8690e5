"""The one-pass final evaluation gives the same numbers as the separate evaluation functions."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trial_testlib import toy_config

from lolsearch.config import AttentionConfig, parse_trial_config
from lolsearch.models import resolve_device
from lolsearch.trial import baselines, eval_pass, evaluate, surgery
from lolsearch.trial.record import SEQ_NLL_FILE
from lolsearch.trial.run import run_trial
from lolsearch.trial.surgery import linearize

VOCAB = 100
REL = 1e-6

pytestmark = pytest.mark.usefixtures("one_thread")


def toy(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      initializer_range=0.2, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg).eval()


def student_with_lora() -> torch.nn.Module:
    """A linearized toy with non-zero LoRA: the teacher (adapters off, softmax) differs from it in both ways."""
    peft = pytest.importorskip("peft")
    model = toy()
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}},
                                     layout="terrace", window=4, backend="torch", chunk_size=8))
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return wrapped


def batches() -> list[dict]:
    gen = torch.Generator().manual_seed(3)
    out = []
    for n, mask in ((3, 5), (2, 0)):  # two batch sizes; the first masks a prompt
        ids = torch.randint(VOCAB, (n, 24), generator=gen)
        labels = ids.clone()
        labels[:, :mask] = -100
        out.append({"input_ids": ids, "labels": labels})
    out[0]["labels"][1, :] = -100  # a sequence without a scored token: left out of the per-sequence NLL
    return out


def close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=REL, abs=1e-12)


def test_final_eval_equals_the_separate_functions():
    model, reference, data = student_with_lora(), toy(seed=7), batches()
    nll, tokens = evaluate.sequence_nll(model, data)
    agreement = evaluate.teacher_agreement(model, data)
    kl_ref = evaluate.kl_to_reference(reference, model, data)
    was_training = model.training
    ev = eval_pass.final_eval(model, data, reference)
    assert model.training == was_training
    assert ev.tokens == tokens and len(ev.nll_sum) == len(nll) == 4
    assert all(close(a, b) for a, b in zip(ev.nll_sum, nll, strict=True))
    assert close(ev.ppl, evaluate.perplexity(model, data))
    assert close(ev.kl_teacher, agreement["kl_teacher"]) and agreement["kl_teacher"] > 1e-3
    assert ev.top1_agree == agreement["top1_agree"]
    assert close(ev.kl_reference, kl_ref) and kl_ref > 1e-3
    alone = eval_pass.final_eval(model, data)
    assert alone.kl_reference is None and alone.nll_sum == ev.nll_sum and alone.kl_teacher == ev.kl_teacher


def plain_reference(model, reference, data) -> dict:
    """The metrics from the scored rows alone (boolean-indexed, as written in the formulas), one sequence at a time."""
    import torch.nn.functional as F

    nll, tokens, kl, kl_ref, agree = [], [], 0.0, 0.0, 0
    with torch.no_grad():
        for batch in data:
            ids, labels = batch["input_ids"], batch["labels"]
            student = model(input_ids=ids).logits
            with surgery.teacher_mode(model):
                teacher = model(input_ids=ids).logits
            ref = reference(input_ids=ids).logits
            for b in range(ids.shape[0]):
                keep = labels[b, 1:] != -100
                ls, lt, lr = (F.log_softmax(x[b, :-1][keep].float(), -1) for x in (student, teacher, ref))
                if keep.any():
                    nll.append(float(F.nll_loss(ls, labels[b, 1:][keep], reduction="sum")))
                    tokens.append(int(keep.sum()))
                kl += float(F.kl_div(ls, lt, log_target=True, reduction="sum"))
                kl_ref += float(F.kl_div(ls, lr, log_target=True, reduction="sum"))
                agree += int((ls.argmax(-1) == lt.argmax(-1)).sum())
    n = sum(tokens)
    return {"nll": nll, "tokens": tokens, "kl_teacher": kl / n, "kl_reference": kl_ref / n, "top1_agree": agree / n}


def test_final_eval_matches_the_plain_formulas():
    """Masked rows summed on the device give what the scored rows alone give (the masked prompt, the sequence
    without a scored token and the two batch sizes of ``batches`` included)."""
    model, reference, data = student_with_lora(), toy(seed=7), batches()
    ev, want = eval_pass.final_eval(model, data, reference), plain_reference(model, reference, data)
    assert ev.tokens == want["tokens"] == [19, 19, 23, 23]
    assert all(close(a, b) for a, b in zip(ev.nll_sum, want["nll"], strict=True))
    assert close(ev.kl_teacher, want["kl_teacher"]) and close(ev.kl_reference, want["kl_reference"])
    assert ev.top1_agree == want["top1_agree"]


def test_final_eval_needs_scored_tokens():
    model = toy()
    ids = torch.randint(VOCAB, (2, 8))
    with pytest.raises(ValueError, match="no label tokens"):
        eval_pass.final_eval(model, [{"input_ids": ids, "labels": torch.full_like(ids, -100)}])
    with pytest.raises(ValueError, match="labels"):
        eval_pass.final_eval(model, [{"input_ids": ids}])


@pytest.fixture
def trial_cfg():
    return parse_trial_config(toy_config(finetune={"steps": 1}, eval={"tokens": 256, "batch_size": 2}))


def test_trial_final_eval_takes_kl_teacher_ft_from_the_cached_adapter(trial_cfg, tmp_path, monkeypatch):
    model, reference, data = student_with_lora(), toy(seed=7), batches()
    adapter = tmp_path / "teacher_ft.safetensors"
    adapter.write_bytes(b"")
    monkeypatch.setattr(baselines, "teacher_ft_adapter", lambda cfg, device: adapter)
    monkeypatch.setattr(baselines, "teacher_ft_model", lambda cfg, device: reference)
    m = eval_pass.trial_final_eval(trial_cfg, model, lambda: iter(data), torch.device("cpu"), tmp_path)
    assert sorted(m) == ["kl_teacher", "kl_teacher_ft", "ppl", "top1_agree"]
    assert close(m["kl_teacher_ft"], evaluate.kl_to_reference(reference, model, data))
    assert close(m["ppl"], evaluate.perplexity(model, data))
    assert close(m["kl_teacher"], evaluate.teacher_agreement(model, data)["kl_teacher"])
    saved = json.loads((tmp_path / SEQ_NLL_FILE).read_text())
    assert saved["tokens"] == evaluate.sequence_nll(model, data)[1]


def test_trial_final_eval_without_the_adapter_or_with_a_broken_one(trial_cfg, tmp_path, monkeypatch):
    model, data = student_with_lora(), batches()
    missing = eval_pass.trial_final_eval(trial_cfg, model, lambda: iter(data), torch.device("cpu"), None)
    assert sorted(missing) == ["kl_teacher", "ppl", "top1_agree"]  # _teacher_baselines measures it after the baseline

    def broken(cfg, device):
        raise OSError("cannot read adapter")

    adapter = tmp_path / "teacher_ft.safetensors"
    adapter.write_bytes(b"")
    monkeypatch.setattr(baselines, "teacher_ft_adapter", lambda cfg, device: adapter)
    monkeypatch.setattr(baselines, "teacher_ft_model", broken)
    m = eval_pass.trial_final_eval(trial_cfg, model, lambda: iter(data), torch.device("cpu"), None)
    assert m["kl_teacher_ft_error"] == "OSError: cannot read adapter"
    assert m["ppl"] == missing["ppl"] and m["kl_teacher"] == missing["kl_teacher"]


def test_a_trial_with_the_adapter_cached_gets_kl_teacher_ft_from_the_one_pass(monkeypatch):
    cfg = parse_trial_config(toy_config(
        distill={"steps": 2, "batch_size": 2, "eval_batches": 1}, finetune={"steps": 2, "batch_size": 2, "eval_batches": 1},
        eval={"tokens": 256, "batch_size": 2}, efficiency={"measure": False}, seed=11))
    first = run_trial(cfg)  # computes the teacher_ft baseline, then kl_teacher_ft in a pass of its own
    assert first.status == "ok", first.error
    assert baselines.teacher_ft_adapter(cfg, resolve_device(cfg.device)).is_file()  # the trial's device (a GPU's too)

    def separate(*args, **kwargs):
        raise AssertionError("kl_teacher_ft measured apart although its adapter was cached")

    monkeypatch.setattr(baselines, "kl_teacher_ft", separate)
    second = run_trial(cfg)  # the same deterministic trial: its kl_teacher_ft comes from the one pass
    assert second.status == "ok", second.error
    for key in ("ppl", "kl_teacher", "top1_agree", "kl_teacher_ft"):
        assert close(second.metrics[key], first.metrics[key]), key
