"""Turns on the memory-saving speed-only stage settings in space files, in place, and sets their GPU share.

Used on a device call's copy of the checkout before `rerun.sh detach`, once the GPU tests of those settings have
passed on that machine (issue 18, 2026-12-03 evening):

    python3 results/h200/speed_settings.py --share 0.2 --concurrent 5 --cpu 3 spaces/beyond_recipe.yaml

Sets base.distill.recompute_features, base.finetune.recompute_features and base.finetune.loss_chunk_tokens. They are
speed-only (not part of a trial id), so a sweep started without them resumes with them. The sweep keeps the file it
ran with as OUT/space.yaml.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spaces", nargs="+", type=Path)
    p.add_argument("--share", type=float, required=True, help="resources.gpu per trial")
    p.add_argument("--concurrent", type=int, required=True, help="budget.max_concurrent")
    p.add_argument("--cpu", type=int, required=True, help="resources.cpu per trial")
    p.add_argument("--loss-chunk-tokens", type=int, default=2048, help="finetune.loss_chunk_tokens")
    args = p.parse_args()
    for path in args.spaces:
        space = yaml.safe_load(path.read_text())
        base = space["base"]
        base.setdefault("distill", {})["recompute_features"] = True
        base.setdefault("finetune", {}).update(recompute_features=True, loss_chunk_tokens=args.loss_chunk_tokens)
        space["resources"] = {**space.get("resources", {}), "cpu": args.cpu, "gpu": args.share}
        space["budget"] = {**space.get("budget", {}), "max_concurrent": args.concurrent}
        header = f"# {path.name} with the speed-only memory settings, written by results/h200/speed_settings.py\n"
        path.write_text(header + yaml.safe_dump(space, sort_keys=False, allow_unicode=True))
        print(f"{path}: recompute_features on, loss_chunk_tokens {args.loss_chunk_tokens}, "
              f"{args.concurrent} x gpu {args.share}, cpu {args.cpu}")


if __name__ == "__main__":
    main()
