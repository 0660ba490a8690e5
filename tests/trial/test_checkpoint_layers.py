"""finetune.checkpoint_layers (activation checkpointing per decoder layer): the LoRA stage's losses are unchanged,
autograd keeps less for the backward pass, and the setting is outside the trial id."""

import copy
import logging
import math

import pytest
import torch
from trial_testlib import STAGE_SEQ, saved_bytes, stage_batches, stage_student, stage_val

from lolsearch.config import FinetuneConfig, LoraOptions, parse_trial_config
from lolsearch.trial.finetune import add_lora, run_finetune
from lolsearch.trial.surgery import checkpointed_layers, unwrap_peft

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, cuda])])
def test_checkpointed_layers_reproduce_the_lora_stage(device, caplog):
    model, tok = stage_student(device)
    twin = copy.deepcopy(model)
    common = {"steps": 4, "batch_size": 2, "grad_accum": 2, "grad_clip": 1.0, "eval_every": 2, "eval_batches": 1,
              "sync_every": 2, "lr": 1e-3, "cuda_graph": False}
    curves = []
    for m, speed in ((model, {}), (twin, {"checkpoint_layers": True, "recompute_features": True})):
        torch.manual_seed(0)
        peft = add_lora(m, LoraOptions(rank=2), cotrain_attention=False)
        with caplog.at_level(logging.INFO):
            ft = run_finetune(peft, FinetuneConfig(**common, **speed), stage_batches(tok, 2, device),
                              stage_val(tok, device), STAGE_SEQ)
        assert not any(getattr(mod, "gradient_checkpointing", False) for mod in unwrap_peft(peft).modules())
        curves.append([p["loss"] for p in ft.curve] + [p["eval_loss"] for p in ft.eval_curve])
    tol = 1e-5 if device == "cpu" else 2e-3
    assert all(math.isclose(a, b, rel_tol=tol, abs_tol=tol) for a, b in zip(*curves, strict=True)), curves


def test_checkpointed_layers_keep_less_for_backward():
    """With checkpointing, what is kept is about the layers' inputs: well under half of the full activations."""
    model, tok = stage_student()
    peft = add_lora(model, LoraOptions(rank=2), cotrain_attention=False)
    batch = next(iter(stage_batches(tok, 2)))
    kept = saved_bytes(peft, batch)
    grads = [p.grad.clone() for p in peft.parameters() if p.requires_grad]
    peft.zero_grad(set_to_none=True)
    peft.train()
    with checkpointed_layers(peft, True):
        checkpointed = saved_bytes(peft, batch)
    again = [p.grad for p in peft.parameters() if p.requires_grad]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(grads, again, strict=True))
    assert checkpointed < kept / 2, (kept, checkpointed)


def test_checkpoint_layers_is_a_speed_setting_outside_the_trial_id():
    base = parse_trial_config({})
    on = parse_trial_config({"finetune": {"checkpoint_layers": True}})
    assert on.trial_id == base.trial_id and on.finetune.checkpoint_layers
