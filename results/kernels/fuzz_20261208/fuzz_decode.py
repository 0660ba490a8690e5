"""Random generation cases on the tiny random Llama (2 layers, GQA 4 / 2 heads, fp32, CPU; the Triton backend in
the interpreter) against the full forward: prefill in one to three pieces, then one-token steps, for random layouts,
windows (shorter and longer than the prompt), prompt lengths, backends and softmax layers; every few cases also a
left-padded batch through ``generate()`` and the static step (``graphed_generate``, eager on CPU) against each row
alone. Prints one line per case and stops at the first mismatch.

    TRITON_INTERPRET=1 python results/kernels/fuzz_20261208/fuzz_decode.py CASES SEED
"""

from __future__ import annotations

import random
import sys

import torch

from lolsearch.config import AttentionConfig, ModelConfig
from lolsearch.models import load_model
from lolsearch.trial.graphed import graphed_generate
from lolsearch.trial.surgery import cache_kwarg, linearize, new_cache

TOL = 1e-4


def toy(layout: str, window: int, backend: str, softmax_layers: tuple[int, ...]):
    model, tok = load_model(ModelConfig(source="toy-llama", toy={"layers": 2}, dtype="float32"), "cpu")
    linearize(model, AttentionConfig(feature_map={"kind": "hedgehog", "params": {"feature_dim": 8}}, backend=backend,
                                     chunk_size=16, layout=layout, window=window, softmax_layers=softmax_layers))
    return model, tok


def pieces_then_steps(model, ids: torch.Tensor, cuts: list[int]) -> torch.Tensor:
    """Logits of prefill pieces ids[:, a:b] for consecutive cuts, then one token at a time."""
    out = []
    with torch.no_grad():
        cache = new_cache(model)
        kw = {cache_kwarg(model): cache}
        a = 0
        for b in cuts:
            out.append(model(ids[:, a:b], use_cache=True, **kw).logits)
            a = b
        for t in range(a, ids.shape[1]):
            out.append(model(ids[:, t : t + 1], use_cache=True, **kw).logits)
    return torch.cat(out, 1)


def greedy(model, tok, ids, mask=None, n: int = 12):
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=None)
    return out[:, ids.shape[1] :]


def main() -> int:
    cases, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    for i in range(cases):
        layout = rng.choice(["sliding", "terrace", "linear"])
        window = 0 if layout == "linear" else rng.choice([1, 2, 3, 5, 8, 16, 33])
        backend = rng.choice(["torch", "torch", "triton"])
        soft = rng.choice([(), (), (1,)])
        t = rng.randint(2, 40)
        n_cuts = rng.choice([1, 1, 2, 3])
        cuts = sorted(rng.sample(range(1, t + 1), min(n_cuts, t)))
        model, tok = toy(layout, window, backend, soft)
        ids = torch.randint(3, 256, (2, t), generator=torch.Generator().manual_seed(seed * 1000 + i))
        with torch.no_grad():
            full = model(ids).logits
        err = (pieces_then_steps(model, ids, cuts) - full).abs().max().item()
        line = f"{layout} w={window} {backend} soft={soft} T={t} cuts={cuts}: max |logit diff| {err:.1e}"
        ok = err <= TOL
        if ok and i % 4 == 0:  # left-padded batch: generate() and the static step against each row alone
            lens = [rng.randint(1, 20) for _ in range(3)]
            g = torch.Generator().manual_seed(seed * 1000 + i + 1)
            rows = [torch.randint(3, 256, (n,), generator=g) for n in lens]
            ids_p = torch.full((3, max(lens)), tok.pad_token_id)
            mask = torch.zeros(3, max(lens), dtype=torch.long)
            for r, row in enumerate(rows):
                ids_p[r, max(lens) - len(row) :], mask[r, max(lens) - len(row) :] = row, 1
            batch = greedy(model, tok, ids_p, mask)
            alone = torch.stack([greedy(model, tok, row[None])[0] for row in rows])
            static = graphed_generate(model, ids_p, mask, max_new_tokens=12)[:, ids_p.shape[1] :]
            same = torch.equal(batch, alone) and torch.equal(static, alone)
            line += f"; padded rows {lens}: generate {'=' if torch.equal(batch, alone) else '!='} alone, static " \
                    f"{'=' if torch.equal(static, alone) else '!='} alone"
            ok = ok and same
        print(("ok  " if ok else "BAD ") + line, flush=True)  # noqa: T201
        if not ok:
            return 1
    print(f"{cases} cases ok")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
