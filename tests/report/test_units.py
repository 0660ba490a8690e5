"""Report tables carry units: byte metrics in KiB/MiB/GiB with the unit in the header, LaTeX headers as words;
axis labels come from the metric table."""

import pandas as pd

from lolsearch.report.plots import axis_label
from lolsearch.report.render import Table, latex_table, markdown_table
from lolsearch.report.units import with_units


def test_byte_columns_in_mib_with_the_unit_in_the_header():
    frame = pd.DataFrame({"trial_id": ["a", "b"], "state_bytes_32k": [3 * 2**20, 5 * 2**20],
                          "state_bytes_32k ci_low": [2 * 2**20, 4 * 2**20], "ppl": [10.0, 11.0]})
    shown = with_units(frame)
    assert list(shown.columns) == ["trial_id", "state_bytes_32k [MiB]", "state_bytes_32k ci_low [MiB]", "ppl"]
    assert shown["state_bytes_32k [MiB]"].tolist() == [3.0, 5.0] and shown["ppl"].tolist() == [10.0, 11.0]
    assert "state_bytes_32k [MiB]" in markdown_table(frame)
    tex = latex_table(Table("t", "T", frame))
    assert "state bytes 32k [MiB]" in tex and "trial id" in tex and "3,145,728" not in tex


def test_axis_labels_from_the_metric_table():
    assert axis_label("peak_mem_mb") == "peak memory [MiB]"
    assert axis_label("kl_teacher_ft").endswith("[nats/token]")
