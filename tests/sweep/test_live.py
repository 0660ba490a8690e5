"""The live progress renderer in non-interactive mode (CI, pipes): periodic lines, ETAs; short labels."""

from lolsearch.search.labels import legend, short_labels, short_value
from lolsearch.sweep.live import ProgressBoard, RunProgress, fmt_duration


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def steps(stage, n, total_tokens_per_step=100, tok_s=50.0, start=1):
    for i in range(start, n + 1):
        yield {"stage": stage, "step": i, "tokens": i * total_tokens_per_step, "loss": 1.0 / i, "lr": 1e-3,
               "tok_s": tok_s}


def test_periodic_lines_every_tenth_of_a_stage_and_every_30_s():
    clock, lines = Clock(), []
    board = ProgressBoard(planned=3, interactive=False, emit=lines.append, clock=clock, every_s=30)
    board.trial_started("abc", {"distill": 100, "finetune": 50}, "hedgehog/terrace")
    assert lines == ["start   abc  hedgehog/terrace"]
    board.trial_event("abc", {"stage": "swap", "ppl_swap": 300.0})
    for event in steps("distill", 100):
        clock.t += 2.0  # 100 tokens per step at 50 tok/s
        board.trial_event("abc", event)
    progress = [ln for ln in lines if ln.startswith("trial")]
    # one line when training starts, then one per 10% (steps 10, 20, ... 100): no line per step
    assert len(progress) == 11, progress
    assert "distill 10/100 (10%)" in progress[1] and "distill 100/100 (100%)" in progress[-1]
    # at step 50 of distill: 50 steps left here + 50 finetune steps, 2 s each
    assert "eta 3m20s" in progress[5], progress[5]
    assert "loss 0.02" in progress[5] and "50 tok/s" in progress[5]
    # a stage change is a line; then nothing new for a while -> a line after 30 s even without a new decile
    n = len(lines)
    board.trial_event("abc", {"stage": "distill_done", "ppl_distill": 40.0})
    assert len(lines) == n + 1 and "finetune 0/50" in lines[-1]
    clock.t += 10
    board.trial_event("abc", next(steps("finetune", 1)))
    clock.t += 10
    board.trial_event("abc", next(steps("finetune", 2, start=2)))
    assert len(lines) == n + 1
    clock.t += 15
    board.trial_event("abc", next(steps("finetune", 3, start=3)))
    assert len(lines) == n + 2 and "finetune 3/50" in lines[-1]


def test_sweep_eta_from_finished_and_running_trials():
    clock = Clock()
    board = ProgressBoard(planned=4, interactive=False, emit=lambda _: None, clock=clock)
    assert board.sweep_eta() is None
    board.trial_started("a", {"distill": 10})
    board.trial_event("a", {"stage": "swap"})
    for event in steps("distill", 5):
        board.trial_event("a", event)
    assert board.running["a"].eta() == 10.0  # 5 steps left at 2 s
    clock.t += 20
    board.trial_finished("a", wall_s=100.0)
    board.trial_started("b", {"distill": 10})
    board.trial_event("b", {"stage": "swap"})
    for event in steps("distill", 5):
        board.trial_event("b", event)
    # b: 10 s left; then 2 pending trials in waves of 1 at the mean finished time (100 s)
    assert board.sweep_eta() == 10.0 + 2 * 100.0
    assert fmt_duration(board.sweep_eta()) == "3m30s"


def test_disabled_stage_is_skipped_and_the_table_renders():
    from rich.console import Console

    board = ProgressBoard(planned=1, interactive=False, emit=lambda _: None, clock=Clock())
    board.trial_started("x", {"distill": 0, "finetune": 4}, "t2r")
    board.trial_event("x", {"stage": "swap"})
    assert board.running["x"].stage == "finetune"
    console = Console(width=100, record=True)
    console.print(board.table())
    text = console.export_text()
    assert "finetune" in text and "0/4" in text and "sweep eta" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_run_progress_lines_when_not_a_terminal():
    lines = []
    with RunProgress("tid", {"distill": 10, "finetune": 0}, interactive=False, emit=lines.append,
                     clock=Clock()) as progress:
        for event in steps("distill", 10):
            progress(event)
    assert lines[0].startswith("start   tid")
    assert sum("distill" in ln for ln in lines) == 10 and "distill 10/10 (100%)" in lines[-1]


def test_short_labels_and_legend():
    keys = ["attention.feature_map.kind", "attention.layout", "distill.lr", "finetune.lr", "distill.enabled"]
    labels = short_labels(keys)
    assert labels == {"attention.feature_map.kind": "feature_map", "attention.layout": "layout",
                      "distill.lr": "distill.lr", "finetune.lr": "finetune.lr", "distill.enabled": "distill"}
    assert "feature_map = attention.feature_map.kind" in legend(keys)
    assert short_value(0.000123456) == "0.0001235" and short_value({"power": 1}) == '{"power":1}'
    assert len(short_value("x" * 40)) == 12


def test_sweep_rows_fit_100_columns(tmp_path, monkeypatch):
    import io
    from pathlib import Path

    from rich.console import Console

    from lolsearch.search.space import load_space
    from lolsearch.sweep import progress

    buf = io.StringIO()
    monkeypatch.setattr(progress, "console", lambda: Console(file=buf, width=300, soft_wrap=True))
    spaces = Path(__file__).resolve().parents[2] / "spaces"
    for name in ("lolcats_ablation", "toy"):
        space = load_space(spaces / f"{name}.yaml")
        cb = progress.SweepCallback(space, tmp_path / name, planned=24)
        params = {k: "hedgehog" if k.endswith("kind") else 64 for k in space.searched_keys}
        record = {"trial_id": "0123456789", "status": "ok", "timing": {"total_s": 754.0},
                  "metrics": {"ppl_ratio_ft": 1.0123456, "state_bytes_32k": 3 * 2**20}}
        cb._print_row(record, params)
    lines = buf.getvalue().splitlines()
    rows = [ln for ln in lines if ln.startswith("1/24")]
    assert len(rows) == 2 and all(len(ln.rstrip()) <= 100 for ln in lines if not ln.startswith(("design", "columns")))
    assert "3 MiB" in rows[0] and "12m34s" in rows[0] and "1.012" in rows[0]
    assert any(ln.startswith("design = attention.feature_map.kind / attention.layout") for ln in lines)
    assert "hedgehog/" in rows[0]  # the collapsed design column of the 6-key ablation
