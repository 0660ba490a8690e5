"""Malformed input of every kind, through the command line: exit 2 with a few ``file: key: message`` lines, no
traceback, nothing written or overwritten, within a time bound (issue 13).

Cases run in this process (``lolsearch.cli.main``; a SIGALRM timer turns a hang into a failure) except the
usage errors, which go through the real entry point in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lolsearch.cli import main as cli_main

BOUND_S = 40  # generous: the slowest case builds a toy model; a hang or an allocation blow-up takes far longer

CORPUS = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and so on.\n" for i in range(400))
TRIAL = """\
model: {source: toy-llama}
data: {source: text, path: corpus.txt, seq_len: 32}
attention: {layout: sliding, window: 8}
distill: {steps: 1, batch_size: 1}
finetune: {steps: 1, batch_size: 1}
eval: {tokens: 64, batch_size: 1, teacher_ft: false}
efficiency: {measure: false}
device: cpu
"""
SPACE = """\
name: s
base:
  model: {source: toy-llama}
  data: {source: text, path: corpus.txt, seq_len: 32}
  attention: {window: 8}
  distill: {steps: 1, batch_size: 1}
  finetune: {steps: 1, batch_size: 1}
  device: cpu
search:
  attention.feature_map.kind: {choice: [hedgehog, t2r]}
  attention.layout: {choice: [sliding, terrace]}
objectives: [{metric: ppl_ratio_ft}]
sampler: {kind: grid}
"""
BOMB = "lol: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))


def _silent_port() -> int:
    """A port where something accepts connections but never answers (not a Ray cluster)."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(srv.accept()) for _ in range(8)], daemon=True).start()
    return srv.getsockname()[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: a corpus, a trial config, a space, a finished-looking trial folder and broken copies."""
    root = tmp_path_factory.mktemp("ws")
    (root / "corpus.txt").write_text(CORPUS)
    (root / "trial.yaml").write_text(TRIAL)
    (root / "space.yaml").write_text(SPACE)
    _make_trial(root / "trial_ok")
    _broken_adapters(root)
    (root / "afile").write_text("not a folder\n")
    return root


def _make_trial(d: Path) -> None:
    from lolsearch.config import parse_trial_config
    from lolsearch.config.io import load_yaml
    from lolsearch.trial.record import build_student, save_adapter, write_config, write_result

    cwd = os.getcwd()
    os.chdir(d.parent)
    try:
        cfg = parse_trial_config(load_yaml(d.parent / "trial.yaml"))
        model, _ = build_student(cfg, torch.device("cpu"))
    finally:
        os.chdir(cwd)
    d.mkdir()
    write_config(cfg, d)
    save_adapter(model, d)
    write_result(d, {"trial_id": cfg.trial_id, "status": "ok", "metrics": {"ppl": 1.0}, "config": {}})


def _broken_adapters(root: Path) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    good = root / "trial_ok" / "adapter.safetensors"
    tensors = load_file(str(good))
    first = next(iter(tensors))
    lora = next(k for k in tensors if "lora_A" in k)
    variants = {
        "missing": None,
        "truncated": good.read_bytes()[: good.stat().st_size // 2],
        "garbage": b"\xff" * 64,
        "shapes": {**tensors, first: torch.zeros(3, 3)},
        "extra": {**tensors, "bogus.weight": torch.zeros(2)},
        "nan": {**tensors, lora: tensors[lora] * float("nan")},
    }
    for name, content in variants.items():
        d = root / f"adapter_{name}"
        shutil.copytree(root / "trial_ok", d)
        target = d / "adapter.safetensors"
        if content is None:
            target.unlink()
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            save_file(content, str(target))


def _write(ws: Path, name: str, text: str | bytes) -> str:
    path = ws / "cases" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _edited(template: str, ws: Path, name: str, edits: tuple[tuple[str, str], ...]) -> str:
    text = template.replace("corpus.txt", str(ws / "corpus.txt"))
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return _write(ws, name, text)


def _trial(ws: Path, name: str, *edits: tuple[str, str]) -> str:
    return _edited(TRIAL, ws, name, edits)


def _space(ws: Path, name: str, *edits: tuple[str, str]) -> str:
    return _edited(SPACE, ws, name, edits)


def _data(ws: Path, name: str, content: str | bytes, source: str = "text") -> str:
    path = _write(ws, name, content)
    return _trial(ws, f"{name}.yaml", ("source: text, path: " + str(ws / "corpus.txt"), f"source: {source}, path: {path}"))


def _resume(ws: Path, name: str, files: dict[str, bytes]) -> list[str]:
    """``sweep --resume`` of a sweep folder holding the space as run plus ``files``."""
    space = _space(ws, f"{name}.yaml")
    out = ws / "cases" / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "space.yaml").write_bytes(Path(space).read_bytes())
    for fname, content in files.items():
        (out / fname).write_bytes(content)
    return ["sweep", space, "--out", str(out), "--resume", "--yes"]


def _model_dir(ws: Path, name: str, config: str) -> str:
    d = ws / "cases" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(config)
    return str(d)


def _gpt2_dir(ws: Path) -> str:
    d = ws / "cases" / "gpt2"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 8}))
    return str(d)


# (id, argv builder, expected exit code, substrings stderr must contain)
CASES = [
    # ---- YAML files: one reader, guards before anything is built
    ("yaml-duplicate-key", lambda w: ["validate", _write(w, "dup.yaml", TRIAL + "seed: 1\nseed: 2\n")], 2,
     ["dup.yaml: invalid YAML: line 10: duplicate key 'seed'"]),
    ("yaml-alias-bomb-in-choice", lambda w: ["validate", _space(w, "bomb.yaml", ("search:\n", BOMB + "search:\n  seed: {choice: *i}\n"))],
     2, ["bomb.yaml: expands to more than"]),
    ("yaml-deep-nesting", lambda w: ["validate", _write(w, "deep.yaml", "a: " + "[" * 5000 + "]" * 5000 + "\n")], 2,
     ["deep.yaml: nested more than"]),
    ("yaml-recursive-alias", lambda w: ["validate", _write(w, "rec.yaml", "a: &a [1, *a]\n")], 2, ["rec.yaml: an alias"]),
    ("yaml-not-utf8", lambda w: ["validate", _write(w, "latin1.yaml", "name: caf\xe9\n".encode("latin-1"))], 2,
     ["latin1.yaml: not UTF-8 text"]),
    ("yaml-binary", lambda w: ["run", _write(w, "bin.yaml", bytes(range(256)) * 4)], 2, ["bin.yaml: "]),
    ("yaml-huge-file", lambda w: ["validate", _write(w, "huge.yaml", "#" * (5 << 20))], 2, ["huge.yaml: larger than"]),
    ("yaml-huge-integer", lambda w: ["validate", _write(w, "bigint.yaml", "seed: " + "9" * 5000 + "\n")], 2,
     ["bigint.yaml: "]),
    ("yaml-endless-device", lambda w: ["validate", "/dev/zero"], 2, ["/dev/zero: larger than"]),
    ("yaml-is-a-folder", lambda w: ["validate", str(w / "trial_ok")], 2, ["trial_ok: cannot read"]),
    ("yaml-missing", lambda w: ["plan", str(w / "nope.yaml")], 2, ["nope.yaml: cannot read"]),
    ("expr-too-long", lambda w: ["validate", _space(w, "longexpr.yaml", ("terrace]}", "terrace], when: \"" + "1 + " * 400 + "1 > 0\"}"))],
     2, ["longexpr.yaml: search.attention.layout.when: expression longer than"]),
    ("expr-too-deep", lambda w: ["validate", _space(w, "deepexpr.yaml", ("terrace]}", "terrace], when: \"" + "[" * 300 + "]" * 300 + "\"}"))],
     2, ["deepexpr.yaml: search.attention.layout.when:"]),
    # ---- grids are sized before they are built
    ("grid-int-range-1e12", lambda w: ["plan", _space(w, "g1.yaml", ("search:\n", "search:\n  seed: {int: [0, 1e12]}\n"))], 2,
     ["g1.yaml: search.seed: takes 1e+12 values; a grid holds at most"]),
    ("grid-float-step-1e-12", lambda w: ["validate", _space(w, "g2.yaml", ("search:\n", "search:\n  distill.lr: {float: [0.001, 0.1], step: 1.0e-12}\n"))],
     2, ["g2.yaml: search.distill.lr: takes"]),
    # ---- silently wrong values are refused, at the right key
    ("set-bool-for-int", lambda w: ["run", _trial(w, "t.yaml"), "--set", "attention.window=true"], 2,
     ["--set: attention.window: expected a number, got true"]),
    ("yaml-bool-for-int", lambda w: ["validate", _trial(w, "boolwin.yaml", ("window: 8", "window: true"))], 2,
     ["boolwin.yaml: attention.window: expected a number"]),
    ("nan-learning-rate", lambda w: ["validate", _trial(w, "nan.yaml", ("distill: {steps: 1", "distill: {lr: .nan, steps: 1"))], 2,
     ["nan.yaml: distill.lr: Input should be a finite number"]),
    ("inf-learning-rate", lambda w: ["validate", _trial(w, "inf.yaml", ("finetune: {steps: 1", "finetune: {lr: .inf, steps: 1"))], 2,
     ["inf.yaml: finetune.lr: Input should be a finite number"]),
    ("window-longer-than-sequence", lambda w: ["validate", _trial(w, "win.yaml", ("window: 8", "window: 64"))], 2,
     ["win.yaml: attention.window: window 64 is longer than data.seq_len 32"]),
    ("misspelled-layout-names-its-key", lambda w: ["validate", _space(w, "lay.yaml", ("[sliding, terrace]", "[slidng, terrace]"))], 2,
     ["lay.yaml: search.attention.layout: unknown layout 'slidng'"]),
    ("set-unknown-key", lambda w: ["run", _trial(w, "t.yaml"), "--set", "attention.windw=3"], 2,
     ["--set: attention.windw: unknown key 'windw'; did you mean 'window' or 'window_schedule'?"]),
    ("set-bad-value-on-space", lambda w: ["run", _space(w, "sp.yaml"), "--set", "data.seq_len=4"], 2, ["--set: data.seq_len:"]),
    ("set-not-key-value", lambda w: ["run", _trial(w, "t.yaml"), "--set", "novalue"], 2, ["--set: novalue: expected dotted.key=value"]),
    ("seed-beyond-32-bits", lambda w: ["validate", _trial(w, "seed.yaml", ("device: cpu", "device: cpu\nseed: 99999999999999999999999"))], 2,
     ["seed.yaml: seed: Input should be less than 4294967296"]),
    ("batch-beyond-memory", lambda w: ["run", _trial(w, "t.yaml"), "--set", "distill.batch_size=1000000000"], 2,
     ["--set: distill.batch_size: 1000000000 sequences"]),
    ("timed-batch-beyond-memory", lambda w: ["run", _trial(w, "t.yaml"), "--set", "efficiency.measure=true", "--set",
                                             "efficiency.prefill_lengths=[100000000]"], 2, ["--set: efficiency.prefill_lengths:"]),
    ("toy-model-absurd", lambda w: ["run", _trial(w, "t.yaml"), "--set", "model.toy.intermediate_size=99999999999999"], 2,
     ["--set: model.toy: about"]),
    ("cpu-share-tiny", lambda w: ["validate", _space(w, "cpu.yaml", ("sampler: {kind: grid}", "sampler: {kind: grid}\nresources: {cpu: 0.0001}"))],
     2, ["cpu.yaml: resources.cpu: Input should be greater than or equal to 0.1"]),
    # ---- command-line values out of range
    ("max-trials-negative", lambda w: ["sweep", _space(w, "sp.yaml"), "--max-trials", "-1"], 2, ["--max-trials"]),
    ("time-budget-negative", lambda w: ["sweep", _space(w, "sp.yaml"), "--time-budget", "-5"], 2, ["--time-budget: must be a positive"]),
    ("connect-timeout-zero", lambda w: ["sweep", _space(w, "sp.yaml"), "--connect-timeout", "0"], 2, ["--connect-timeout"]),
    ("samples-negative", lambda w: ["validate", _space(w, "sp.yaml"), "--samples", "-5"], 2, ["--samples"]),
    ("max-new-tokens-zero", lambda w: ["generate", str(w / "trial_ok"), "--max-new-tokens", "0"], 2, ["--max-new-tokens"]),
    ("max-new-tokens-huge", lambda w: ["generate", str(w / "trial_ok"), "--max-new-tokens", "100000000"], 2, ["--max-new-tokens"]),
    ("empty-prompt", lambda w: ["generate", str(w / "trial_ok"), "--prompt", ""], 2, ["--prompt: is empty"]),
    ("compare-folder-with-itself", lambda w: ["compare", str(w / "trial_ok"), str(w / "trial_ok" / ".." / "trial_ok")], 2,
     ["given twice"]),
    ("compare-out-is-a-file", lambda w: ["compare", str(w / "trial_ok"), str(w / "adapter_nan"), "--out", str(w / "afile")], 2,
     ["afile: is a file, not a folder"]),
    ("prompt-too-long", lambda w: ["generate", str(w / "trial_ok"), "--prompt", "x" * 140_000], 2, ["--prompt: is 14"]),
    ("chat-without-template", lambda w: ["generate", str(w / "trial_ok"), "--chat", "--max-new-tokens", "2"], 2,
     ["--chat: this model's tokenizer has no chat template"]),
    ("report-on-a-file", lambda w: ["report", str(w / "afile")], 2, ["afile: not a directory"]),
    ("confirm-on-a-file", lambda w: ["confirm", str(w / "afile")], 2, ["afile: not a directory"]),
    ("confirm-bad-set", lambda w: ["confirm", str(w / "trial_ok"), "--set", "distill.tokens"], 2,
     ["--set: distill.tokens: expected dotted.key=value"]),
    # ---- no data loss: an existing trial, a file or an unwritable place as --out
    ("run-out-holds-a-trial", lambda w: ["run", _trial(w, "t.yaml"), "--out", str(w / "trial_ok"), "--set", "seed=5"], 2,
     ["trial_ok: already holds trial", "--overwrite"]),
    ("run-out-is-a-file", lambda w: ["run", _trial(w, "t.yaml"), "--out", str(w / "afile")], 2, ["afile: is a file, not a folder"]),
    ("run-out-unwritable", lambda w: ["run", _trial(w, "t.yaml"), "--out", "/proc/lolsearch/x"], 2, ["/proc/lolsearch/x: cannot write"]),
    ("sweep-out-holds-a-sweep-file", lambda w: ["sweep", _space(w, "sp.yaml"), "--out",
                                                str(Path(_write(w, "oldsweep/sweep.json", "{}")).parent)], 2,
     ["oldsweep: already holds a sweep (sweep.json)", "--resume"]),
    ("resume-garbage-sweep-json", lambda w: _resume(w, "rs1", {"sweep.json": b"\xff{"}), 2, ["rs1/sweep.json: cannot be read"]),
    ("resume-garbage-journal", lambda w: _resume(w, "rs2", {"optuna.journal": b"garbage\n\x00"}), 2,
     ["rs2/optuna.journal: cannot be read", "move it aside"]),
    ("resume-binary-space-copy", lambda w: _resume(w, "rs3", {"space.yaml": bytes(range(256))}), 2, ["differs from"]),
    ("sweep-out-is-a-file", lambda w: ["sweep", _space(w, "sp.yaml"), "--out", str(w / "afile")], 2, ["afile: is a file, not a folder"]),
    ("sweep-out-unwritable", lambda w: ["sweep", _space(w, "sp.yaml"), "--out", "/proc/lolsearch/x"], 2, ["cannot write"]),
    # ---- caught before any compute: data, model, indices, device
    ("data-missing", lambda w: ["validate", _trial(w, "nodata.yaml", ("corpus.txt", "no_such_corpus.txt"))], 2,
     ["nodata.yaml: data.path: no files match"]),
    ("data-empty", lambda w: ["validate", _data(w, "empty.txt", "")], 2, ["empty.txt.yaml: data.path: the train split holds at most"]),
    ("data-two-tokens", lambda w: ["run", _data(w, "two.txt", "ab")], 2, ["two.txt.yaml: data.path:"]),
    ("data-broken-jsonl", lambda w: ["validate", _data(w, "bad.jsonl", '{"instruction": "a", "output": "b"}\n{broken\n', "jsonl")], 2,
     ["bad.jsonl:2: data.path: invalid JSON"]),
    ("data-binary", lambda w: ["validate", _data(w, "bin.txt", bytes(range(256)) * 64)], 2, ["bin.txt: data.path: holds NUL bytes"]),
    ("data-glob-over-the-disk", lambda w: ["validate", _trial(w, "glob.yaml", ("path: " + str(w / "corpus.txt"), "path: /**"))], 2,
     ["glob.yaml: data.path: '/**' matches more than"]),
    ("data-jsonl-deep", lambda w: ["validate", _data(w, "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", "jsonl")], 2,
     ["deep.jsonl:1: data.path:"]),
    ("model-config-json-deep", lambda w: ["validate", _trial(w, "deepcfg.yaml", ("toy-llama", _model_dir(w, "deepcfg", "[" * 100_000 + "]" * 100_000)))],
     2, ["deepcfg.yaml: model.source: ", "not a readable JSON config"]),
    ("data-missing-in-space-base", lambda w: ["validate", _space(w, "nodata_space.yaml", ("corpus.txt", "no_such_corpus.txt"))], 2,
     ["nodata_space.yaml: base.data.path: no files match"]),
    ("sweep-data-missing-before-ray", lambda w: ["sweep", _space(w, "nodata_sweep.yaml", ("corpus.txt", "gone.txt")), "--out",
                                                 str(w / "never")], 2, ["base.data.path: no files match"]),
    ("model-hub-id-uncached-offline", lambda w: ["validate", _trial(w, "hub.yaml", ("toy-llama", "nobody/no-such-model-13"))], 2,
     ["hub.yaml: model.source: 'nobody/no-such-model-13' is not in the local HF cache"]),
    ("model-garbage-gguf", lambda w: ["validate", _trial(w, "gguf.yaml", ("toy-llama", _write(w, "junk.gguf", b"GGUF" + b"\xff" * 64)))], 2,
     ["gguf.yaml: model.source: ", "unreadable GGUF header"]),
    ("model-not-gguf-magic", lambda w: ["validate", _trial(w, "gguf2.yaml", ("toy-llama", _write(w, "text.gguf", "hello")))], 2,
     ["model.source: ", "not a GGUF file"]),
    ("model-unsupported-architecture", lambda w: ["validate", _trial(w, "gpt2.yaml", ("toy-llama", _gpt2_dir(w)))], 2,
     ["gpt2.yaml: model.source: architecture 'gpt2' is not supported"]),
    ("softmax-layers-out-of-range", lambda w: ["validate", _trial(w, "sl.yaml", ("window: 8}", "window: 8, softmax_layers: [5]}"))], 2,
     ["sl.yaml: attention.softmax_layers: layer indices [5] out of range for a 2-layer model"]),
    ("layer-override-out-of-range", lambda w: ["run", _trial(w, "t.yaml"), "--set", "attention.layers={7: {layout: linear}}"], 2,
     ["attention.layers.7: layer index 7 out of range"]),
    ("every-layer-softmax", lambda w: ["validate", _trial(w, "allsm.yaml", ("window: 8}", "window: 8, softmax_layers: [0, 1]}"))], 2,
     ["allsm.yaml: attention.softmax_layers: keeps all 2 layers as softmax"]),
    ("lora-rank-absurd", lambda w: ["validate", _trial(w, "rank.yaml", ("finetune: {steps: 1", "finetune: {lora: {rank: 4096}, steps: 1"))], 2,
     ["rank.yaml: finetune.lora.rank: rank 4096 exceeds"]),
    # ---- broken trial folders in generate
    ("generate-no-adapter", lambda w: ["generate", str(w / "adapter_missing")], 2, ["adapter_missing: no adapter.safetensors"]),
    ("generate-truncated-adapter", lambda w: ["generate", str(w / "adapter_truncated")], 2, ["not a readable safetensors file"]),
    ("generate-garbage-adapter", lambda w: ["generate", str(w / "adapter_garbage")], 2, ["not a readable safetensors file"]),
    ("generate-wrong-shapes", lambda w: ["generate", str(w / "adapter_shapes")], 2, ["has shape [3, 3], the model needs"]),
    ("generate-extra-tensor", lambda w: ["generate", str(w / "adapter_extra")], 2, ["1 unexpected, e.g. bogus.weight"]),
    ("generate-nan-adapter", lambda w: ["generate", str(w / "adapter_nan")], 2, ["holds NaN or inf values"]),
    ("generate-not-a-trial", lambda w: ["generate", str(w / "cases")], 2, ["config.yaml: cannot read"]),
    # ---- a cluster address nobody answers: bounded wait, one line
    ("address-nobody-answers", lambda w: ["sweep", _space(w, "sp.yaml"), "--out", str(w / "never2"), "--address",
                                          f"127.0.0.1:{_closed_port()}", "--connect-timeout", "2"], 2, ["--address: no Ray cluster answers at 127.0.0.1:"]),
    ("address-not-a-ray-cluster", lambda w: ["sweep", _space(w, "sp.yaml"), "--out", str(w / "never4"), "--address",
                                             f"127.0.0.1:{_silent_port()}", "--connect-timeout", "3"], 2,
     ["answers but not as a Ray cluster"]),
    ("address-malformed", lambda w: ["sweep", _space(w, "sp.yaml"), "--out", str(w / "never3"), "--address", "nohost"], 2,
     ["--address: 'nohost' is not auto or HOST:PORT"]),
]
CASES.append(("cache-is-a-file", lambda w: ["validate", _trial(w, "t.yaml")], 2, ["$LOLSEARCH_CACHE: ", "is a file, not a folder"]))
if not torch.cuda.is_available():
    CASES.append(("device-cuda-on-cpu-machine", lambda w: ["run", _trial(w, "cuda.yaml", ("device: cpu", "device: cuda"))], 2,
                  ["cuda.yaml: device: 'cuda' but no CUDA device is visible"]))


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (but the case inputs) with its size and mtime."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if "cases" not in p.relative_to(root).parts[:1] and (p.is_file() or p.is_dir())}


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang()


@pytest.mark.parametrize("build, code, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_input_exits_cleanly(ws, build, code, expected, capsys, monkeypatch, request):
    monkeypatch.chdir(ws)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = build(ws)
    if request.node.callspec.id == "cache-is-a-file":
        monkeypatch.setenv("LOLSEARCH_CACHE", str(ws / "afile"))
    capsys.readouterr()
    before = _tree(ws)
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(BOUND_S)
    start = time.perf_counter()
    try:
        rc = cli_main(argv)
    except _Hang:
        pytest.fail(f"no answer within {BOUND_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if not line.startswith(("INFO ", "WARNING ")) and "warn" not in line]
    assert rc == code, err
    assert "Traceback" not in out + err
    assert 1 <= len(lines) <= 6, err
    for text in expected:
        assert any(text in line for line in lines), f"{text!r} not in:\n{err}"
    assert _tree(ws) == before, "a refused command wrote or changed files"
    assert not (ws / "results").exists()
    assert elapsed < BOUND_S


@pytest.mark.parametrize("argv, expected", [
    (["bogus"], "lolsearch: No such command 'bogus'."),
    (["sweep"], "lolsearch sweep: Missing argument"),
    (["sweep", "x.yaml", "--max-trials", "abc"], "lolsearch sweep: Invalid value for '--max-trials'"),
    (["validate", "--bogus", "x"], "lolsearch validate: No such option: --bogus"),
])
def test_usage_errors_through_the_entry_point(argv, expected):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lolsearch", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(expected), proc.stderr
    assert time.perf_counter() - start < 60


def test_version():
    proc = subprocess.run([sys.executable, "-m", "lolsearch", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("lolsearch ") and not proc.stderr


def test_overwrite_replaces_the_trial_in_out_without_mixing(ws, tmp_path):
    """Without --overwrite a folder holding a trial is refused; with it the old trial's files are removed
    before the new run writes its own, so no file of the old trial is left beside the new one's."""
    import shutil

    from lolsearch.core.errors import ConfigError
    from lolsearch.trial import record

    target = tmp_path / "t"
    shutil.copytree(ws / "trial_ok", target)
    (target / "log.txt").write_text("old log\n")
    with pytest.raises(ConfigError, match="already holds trial"):
        record.claim_trial_dir(target)
    assert (target / "log.txt").read_text() == "old log\n"
    record.claim_trial_dir(target, overwrite=True)
    assert target.is_dir() and not any((target / name).exists() for name in record.TRIAL_FILES)


def test_a_result_whose_metrics_is_not_a_mapping_is_reported_unreadable(ws, tmp_path, capsys):
    import shutil

    sweep = tmp_path / "sweep"
    shutil.copytree(ws / "trial_ok", sweep / "trials" / "bad")
    (sweep / "trials" / "bad" / "result.json").write_text(json.dumps({"trial_id": "bad", "status": "ok", "metrics": [1, 2]}))
    shutil.copytree(sweep, tmp_path / "sweep2")
    assert cli_main(["report", str(sweep)]) == 0
    assert "'metrics' is not a mapping" in (sweep / "report.md").read_text()
    assert cli_main(["compare", str(sweep), str(tmp_path / "sweep2"), "--out", str(tmp_path / "cmp")]) == 0
    assert "Traceback" not in "".join(capsys.readouterr())
