# ruff: noqa: T201 - a measurement that reports by printing
"""Where the wall time of one evaluation pass (``evaluate.sequence_nll``) goes: the trial of
``results/perf/fixed_20261206/trial.yaml`` (SmolLM2-135M shape, Hedgehog + sliding, 131,072 test tokens of 8 x 1024),
on its model right after ``linearize`` (no LoRA), after one untimed graphed pass (Triton compiles there).

Measured, 3 repeats each, ``time.perf_counter`` with ``torch.cuda.synchronize`` around every timed region:
``pass_graphed_s`` / ``pass_eager_s`` (the whole pass, CUDA graphs on / off); ``batches_s`` (building the batches on
the device alone); ``forward_replay_s`` (graph replays of the forward over all batches, after the warm-up and capture
calls, each timed once: ``warmup_call_s``, ``capture_call_s``); ``forward_eager_s`` (the eager forwards);
``metrics_s`` (sequence_nll's per-sequence metric work on precomputed logits, one host read); ``metrics_batched_s``
(the same NLL sums for a whole batch at once, checked against ``metrics_s``'s). Writes ``probe.csv`` (what, repeat,
seconds, note) and ``probe.md`` (medians) into ``--out``; prints the table.

    python3 results/perf/eval_probe_20261206/probe.py --out $OUT/perf/probe
    python3 results/perf/eval_probe_20261206/probe.py --out /tmp/probe_smoke --model toy-llama --tokens 8192  # CPU
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))  # `python3 results/...py` puts the script's folder on sys.path, not the repo root

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lolsearch.config import load_yaml, parse_trial_config  # noqa: E402
from lolsearch.data import packed_batches  # noqa: E402
from lolsearch.models import resolve_device  # noqa: E402
from lolsearch.trial import cache, evaluate  # noqa: E402
from lolsearch.trial.surgery import linearize  # noqa: E402

CONFIG = ROOT / "results/perf/fixed_20261206/trial.yaml"
REPEATS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for probe.csv and probe.md")
    ap.add_argument("--tokens", type=int, help="override eval.tokens")
    ap.add_argument("--model", help="override model.source (e.g. toy-llama for a CPU smoke test)")
    args = ap.parse_args()
    data = load_yaml(CONFIG)
    if args.tokens:
        data["eval"] = {**data.get("eval", {}), "tokens": args.tokens}
    if args.model:
        data["model"] = {**data["model"], "source": args.model}
    cfg = parse_trial_config(data, str(CONFIG))
    dev = resolve_device(cfg.device)
    graph = cuda = dev.type == "cuda"  # off CUDA every pass and forward is eager
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    model, tok = cache.teacher(cfg.model, dev)
    linearize(model, cfg.attention)

    def batches() -> Iterator[dict]:
        return packed_batches(cfg.data, tok, cfg.eval.split, cfg.eval.batch_size, 0, shuffle=False,
                              num_tokens=cfg.eval.tokens, mask_prompt=True, device=dev)

    rows: list[dict] = []

    def timed(what: str, fn: Callable[[], object], note: str = "", repeats: int = REPEATS) -> object:
        out: object = None
        for i in range(repeats):
            sync()
            t0 = time.perf_counter()
            out = fn()
            sync()
            rows.append({"what": what, "repeat": i, "seconds": time.perf_counter() - t0, "note": note})
        return out

    def info(what: str, note: str) -> None:
        rows.append({"what": what, "repeat": 0, "seconds": "", "note": note})

    evaluate.sequence_nll(model, batches(), graph)  # untimed warm pass: Triton compiles and autotunes
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    timed("pass_graphed_s", lambda: evaluate.sequence_nll(model, batches(), graph), f"graph={graph}")
    timed("pass_eager_s", lambda: evaluate.sequence_nll(model, batches(), False))
    dev_batches: list[dict] = timed("batches_s", lambda: list(batches()))  # type: ignore[assignment]
    n, shape = len(dev_batches), tuple(dev_batches[0]["input_ids"].shape)
    tokens = sum(b["input_ids"].numel() for b in dev_batches)
    info("batches", f"{n} batches of {shape} (last {tuple(dev_batches[-1]['input_ids'].shape)}), {tokens} tokens")

    with evaluate._inference(model):
        forward = evaluate._logits_pass(model, "probe", graph)
        timed("warmup_call_s", lambda: forward(dev_batches[0]["input_ids"]), "batch 0, eager on a side stream", 1)
        second = min(1, n - 1)
        timed("capture_call_s", lambda: forward(dev_batches[second]["input_ids"]), f"batch {second}, capture", 1)

        def replays() -> None:
            for b in dev_batches:
                forward(b["input_ids"])

        timed("forward_replay_s", replays, f"{n} calls, {forward.replays} replays before timing")
        info("replays", f"{forward.replays} replays in all (graph={forward.graph is not None})")
        forward.close()

        def eager() -> torch.Tensor:  # batch 0's logits are kept (a full batch: every batch's rows index them)
            first = evaluate._logits(model, dev_batches[0]["input_ids"])
            for b in dev_batches[1:]:
                evaluate._logits(model, b["input_ids"])  # dropped at once, as sequence_nll's are
            return first

        logits: torch.Tensor = timed("forward_eager_s", eager, f"{n} eager forwards")  # type: ignore[assignment]

        def metrics() -> list[list[float]]:
            per: list = []
            for b in dev_batches:
                labels = b["labels"]
                for r in range(labels.shape[0]):
                    logp, target, keep = evaluate._next_token(logits[r], labels[r])
                    per.append((evaluate._nll(logp, target, keep), keep.sum()))
            return evaluate._per_sequence(per)

        def batched() -> list[list[float]]:
            per: list = []
            for b in dev_batches:
                labels = b["labels"]
                lg = logits[: labels.shape[0]]
                logp = F.log_softmax(lg[:, :-1].float(), -1)
                target = labels[:, 1:]
                keep = target != evaluate.IGNORE
                nll = -logp.gather(-1, target.clamp_min(0)[..., None]).squeeze(-1)
                per.append(torch.stack([torch.where(keep, nll, 0.0).sum(-1).double(), keep.sum(-1).double()], -1))
            return torch.cat(per).tolist()

        ref: list[list[float]] = timed("metrics_s", metrics, "per sequence, as sequence_nll")  # type: ignore[assignment]
        got: list[list[float]] = timed("metrics_batched_s", batched, "per batch")  # type: ignore[assignment]
    diff = max(abs(a[0] - b[0]) / max(abs(a[0]), 1e-12) for a, b in zip(ref, got, strict=True))
    same_counts = all(a[1] == b[1] for a, b in zip(ref, got, strict=True))
    print(f"metrics_batched vs metrics: max relative difference of the NLL sums {diff:.3g}, counts equal {same_counts}")
    info("metrics_max_rel_diff", f"{diff:.3g} (counts equal: {same_counts})")
    info("logits", f"{logits.dtype} {tuple(logits.shape)} per batch")
    info("max_memory_allocated", f"{torch.cuda.max_memory_allocated(dev) / 2**30:.2f} GiB" if cuda else "n/a (cpu)")
    info("device", torch.cuda.get_device_name(dev) if cuda else "cpu")

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "probe.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["what", "repeat", "seconds", "note"])
        w.writeheader()
        w.writerows(rows)
    lines = ["| what | median s | tok/s | repeats | note |", "|---|---:|---:|---:|---|"]
    for what in dict.fromkeys(r["what"] for r in rows):  # tok/s: the rows that cover all batches' forwards
        rs = [r for r in rows if r["what"] == what]
        secs = [r["seconds"] for r in rs if r["seconds"] != ""]
        med = f"{statistics.median(secs):.4f}" if secs else ""
        rate = f"{tokens / statistics.median(secs):,.0f}" if what.startswith(("pass_", "forward_")) else ""
        lines.append(f"| {what} | {med} | {rate} | {len(secs) or ''} | {rs[0]['note']} |")
    md = "\n".join(lines)
    cmd = "python3 " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    (args.out / "probe.md").write_text(f"# Evaluation pass probe\n\n`{cmd}`\n\n{md}\n")
    print(md)


if __name__ == "__main__":
    main()
