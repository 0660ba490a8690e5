"""Appends the rows of one folder's device calls to results/perf/train.csv, each with a note naming its run.

Each folder's ``append_rows.py`` lists its runs as (call folder, run folder, what) and calls :func:`append`.
"""
import math

import pandas as pd

TRAIN = "results/perf/train.csv"


def append(folder: str, head: str, runs: list[tuple[str, str, str]]) -> None:
    """Rows of ``folder/<call>/<run>/train.csv`` for each run, noted ``"<head>, <what> (<folder name>/<call>/<run>)"``;
    train.csv keeps its columns (a row with a column it lacks is refused)."""
    main = pd.read_csv(TRAIN)
    rows = []
    for call, sub, what in runs:
        for _, r in pd.read_csv(f"{folder}/{call}/{sub}/train.csv").iterrows():
            d = {k: (float("nan") if isinstance(v, float) and math.isnan(v) else v) for k, v in r.to_dict().items()}
            d["note"] = f"{head}, {what} ({folder.rstrip('/').split('/')[-1]}/{call}/{sub})"
            rows.append(d)
    new = pd.DataFrame(rows)
    extra = [c for c in new.columns if c not in main.columns]
    assert not extra, extra
    out = pd.concat([main, new.reindex(columns=main.columns)], ignore_index=True)
    out.to_csv(TRAIN, index=False)
    print(len(main), "->", len(out))  # noqa: T201
    print(new[["model", "stage", "cuda_graph", "tok_s", "steady_tok_s", "peak_gib"]].to_string())  # noqa: T201
