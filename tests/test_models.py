"""Model sources: toy Llama, local dirs, hub ids offline, GGUF caching; SmolLM2 from PyPI (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from lolsearch import models as M
from lolsearch.config import ModelConfig, ToyModelOptions


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LOLSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_toy_llama_forward_backward() -> None:
    model, tok = M.load_model(ModelConfig(source="toy-llama"))
    assert not model.training and model.config._attn_implementation == "sdpa"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA
    model.train()
    ids = torch.tensor([tok("To be, or not to be: that is the question.")["input_ids"]])  # [1, T]
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, ids.shape[1], len(tok))
    assert torch.isfinite(out.loss) and abs(out.loss.item() - torch.log(torch.tensor(len(tok))).item()) < 1.0
    out.loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


def test_toy_llama_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    a, _ = M.load_model(ModelConfig(source="toy-llama"))
    state = torch.get_rng_state()
    torch.rand(10)  # move the global stream: the toy weights must not depend on it
    b, _ = M.load_model(ModelConfig(source="toy-llama"))
    assert _state_equal(a, b)
    torch.manual_seed(123)
    M.load_model(ModelConfig(source="toy-llama"))
    assert torch.equal(torch.get_rng_state(), state)
    shape = ToyModelOptions(layers=3, hidden_size=32, heads=4, kv_heads=1, intermediate_size=64)
    c, _ = M.load_model(ModelConfig(source="toy-llama", toy=shape))
    assert c.config.num_hidden_layers == 3 and c.config.num_key_value_heads == 1 and c.config.hidden_size == 32


def test_shape_sources_have_the_real_models_shapes_and_deterministic_weights() -> None:
    # On the meta device: the shapes without allocating 8B parameters.
    meta = torch.device("meta")
    small, tok = M.llama3_8b_shape(ModelConfig(source="llama3-8b-shape"), torch.bfloat16, meta)
    assert sum(p.numel() for p in small.parameters()) == 8_030_261_248  # Llama-3-8B
    assert next(small.parameters()).dtype == torch.bfloat16 and torch.get_default_dtype() == torch.float32
    assert small.config.rope_parameters["rope_theta"] == 500000.0 and small.config.num_key_value_heads == 8
    smol, _ = M.smollm2_135m_shape(ModelConfig(source="smollm2-135m-shape"), torch.bfloat16, meta)
    assert sum(p.numel() for p in smol.parameters()) == 134_515_008  # SmolLM2-135M (tied embeddings)
    assert len(tok) < smol.config.vocab_size  # the byte tokenizer's ids index the first rows
    tiny = {**M.SMOLLM2_135M_SHAPE, "num_hidden_layers": 1, "vocab_size": 512, "intermediate_size": 64}
    a, _ = M.random_llama(tiny, torch.float32, torch.device("cpu"))
    torch.rand(3)
    b, _ = M.random_llama(tiny, torch.float32, torch.device("cpu"))
    assert _state_equal(a, b)


def test_byte_tokenizer_round_trips_any_text() -> None:
    tok = M.byte_tokenizer()
    text = "Hark! Wörds — 日本語\n\ttabs"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == list(text.encode()) and tok.decode(ids) == text
    assert len(tok) == 259 and (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (256, 257, 258)


def test_resolve_dtype_and_device() -> None:
    assert M.resolve_dtype("auto", "cpu") == torch.float32
    assert M.resolve_dtype("auto", "cuda") == torch.bfloat16
    assert M.resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        M.resolve_dtype("float64", "cpu")
    assert M.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = M.load_model(ModelConfig(source="toy-llama", dtype="bfloat16"))
    assert model.dtype == torch.bfloat16


def test_registry_lists_one_line_docs() -> None:
    docs = M.MODELS.describe()
    assert set(docs) == {"smollm2-135m", "toy-llama", "smollm2-135m-shape", "llama3-8b-shape"}
    assert all(doc and "\n" not in doc for doc in docs.values())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_load_defaults_to_bf16_for_built_and_saved_models(tmp_path: Path) -> None:
    toy, tok = M.load_model(ModelConfig(source="toy-llama"), "cuda")
    toy.save_pretrained(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "saved")
    saved, _ = M.load_model(ModelConfig(source=str(tmp_path / "saved")), "cuda")  # from_pretrained(device_map=)
    ids = torch.tensor([tok("To be, or not to be")["input_ids"]], device="cuda")
    for model in (toy, saved):
        assert model.device.type == "cuda" and model.dtype == torch.bfloat16
        assert torch.isfinite(model(input_ids=ids).logits.float()).all()


def test_local_directory_loads_like_the_original(tmp_path: Path) -> None:
    toy, tok = M.load_model(ModelConfig(source="toy-llama"))
    toy.save_pretrained(tmp_path / "saved")
    tok.save_pretrained(tmp_path / "saved")
    loaded, tok2 = M.load_model(ModelConfig(source=str(tmp_path / "saved")))
    assert _state_equal(toy, loaded) and not loaded.training
    assert tok2("abc")["input_ids"] == tok("abc")["input_ids"]


def test_hub_id_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        M.load_model(ModelConfig(source="lolsearch-tests/no-such-model"))


def test_gguf_file_is_converted_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy, tok = M.load_model(ModelConfig(source="toy-llama"))
    calls = []

    def fake_convert(gguf: Path, out: Path) -> None:  # stands in for the 20 s dequantization
        calls.append(gguf)
        toy.save_pretrained(out)
        tok.save_pretrained(out)

    monkeypatch.setattr(M, "convert_gguf", fake_convert)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF v1")
    for _ in range(2):
        loaded, _ = M.load_model(ModelConfig(source=str(gguf)))
        assert _state_equal(toy, loaded)
    assert len(calls) == 1
    gguf.write_bytes(b"GGUF v2, a new file")
    M.load_model(ModelConfig(source=str(gguf)))
    assert len(calls) == 2
    assert len([p for p in (tmp_path / "cache" / "models").iterdir() if p.is_dir()]) == 2
    with pytest.raises(FileNotFoundError, match="missing.gguf"):
        M.load_model(ModelConfig(source=str(tmp_path / "missing.gguf")))


_LOAD = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from lolsearch.config import ModelConfig
    from lolsearch.models import load_model
    model, tok = load_model(ModelConfig(source="smollm2-135m"))
    w = model.model.layers[7].self_attn.q_proj.weight
    print(float(w.double().sum()), len(tok))
    """
)


@pytest.fixture(scope="session")
def smollm2_two_loads(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, str, str]]]:
    """Two processes load smollm2-135m at once into one fresh cache (no model hub).

    They fetch the GGUF from PyPI (or ``$LOLSEARCH_SMOLLM2_GGUF`` when set) and convert it: the one conversion of
    the session, shared by the slow tests. Returns the cache and each process's (exit code, stdout, stderr).
    """
    cache = tmp_path_factory.mktemp("smollm2-cache")
    env = {**os.environ, "LOLSEARCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOAD], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    return cache, [(p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)]


@pytest.mark.slow
def test_smollm2_two_processes_loading_at_once_share_one_cache(smollm2_two_loads) -> None:
    cache, results = smollm2_two_loads
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert len({out.strip() for _, out, _ in results}) == 1  # both see the same weights
    assert sum(err.count("converting") for _, _, err in results) == 1  # the lock let exactly one convert
    entries = sorted(p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock"))
    assert entries == ["smollm2-135m"]  # one finished copy, no temporaries left
    downloads = sorted(p.name for p in (cache / "downloads").glob("*") if not p.name.endswith(".lock"))
    assert downloads in ([], ["SmolLM2-135M-Instruct.Q4_1.gguf"])  # the wheel is dropped once unpacked


@pytest.mark.slow
def test_smollm2_reloads_from_cache_without_the_gguf_and_knows_paris(
    smollm2_two_loads, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, _ = smollm2_two_loads
    monkeypatch.setenv("LOLSEARCH_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def must_not_run(*args: object) -> None:
        raise AssertionError("the GGUF must not be read again once the cache exists")

    monkeypatch.setattr(M, "convert_gguf", must_not_run)
    monkeypatch.setattr(M, "smollm2_gguf", must_not_run)
    start = time.perf_counter()
    model, tok = M.load_model(ModelConfig(source="smollm2-135m"))
    assert time.perf_counter() - start < 10
    final = cache / "models" / "smollm2-135m"
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    assert model.config.num_hidden_layers == 30 and model.config.num_key_value_heads == 3
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa" and not model.training
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])
