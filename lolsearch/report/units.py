"""Units in report tables: byte metrics (the metric table's unit ``bytes``) in KiB/MiB/GiB with the unit in the
header, so a reader compares 1.5 MiB with 48 MiB instead of counting digits."""

from __future__ import annotations

import pandas as pd

from lolsearch.report.analysis import numeric_column
from lolsearch.report.plots import byte_unit
from lolsearch.search.metrics import lookup


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def with_units(frame: pd.DataFrame) -> pd.DataFrame:
    """Byte columns (and their ``ci_low``/``ci_high`` companions) in KiB/MiB/GiB by the metric's median, the unit
    in the header: ``state_bytes_32k`` -> ``state_bytes_32k [MiB]``. Other columns as they are."""
    if frame.empty or isinstance(frame.columns, pd.MultiIndex):
        return frame
    out, units = frame, {}
    for col in frame.columns:
        base = str(col).split(" ")[0]
        entry = lookup(base)
        if entry is None or entry.unit != "bytes" or not _is_numeric(frame[col]):
            continue
        if base not in units:
            units[base] = byte_unit("bytes", numeric_column(frame, base if base in frame else col))
        div, unit = units[base]
        if div > 1:
            out = out.assign(**{col: frame[col] / div}).rename(columns={col: f"{col} [{unit}]"})
    return out
