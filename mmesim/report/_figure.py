"""Figure plumbing shared by the charts: Agg canvas (no display, no pyplot state), saving,
and input checks that fail with a ConfigError instead of a matplotlib traceback."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mmesim.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
# The blog's palette (utils/viz_utils.py), so our charts read like theirs.
RPS, LATENCY, OK_BARS, FAIL_BARS = "#8ecae6", "#ffb703", "#43aa8b", "#f94144"


def new_figure(width_in: float, height_in: float) -> Figure:
    # imported here, not with the module: calibrate (and a GPU host's bundle) needs no plotting
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def require_rows(rows: Sequence, what: str) -> None:
    if rows is None or len(rows) == 0:
        raise ConfigError(f"nothing to plot: {what} is empty", field=what)


def require_keys(rows: Iterable[Mapping], keys: Sequence[str], what: str) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ConfigError(f"row {i} is a {type(row).__name__}, expected a dict", field=what)
        missing = [k for k in keys if k not in row]
        if missing:
            raise ConfigError(f"row {i} lacks {', '.join(map(repr, missing))}", field=what)


def number(value, what: str, key: str, i: int) -> float:
    """A plottable float; None (Locust's N/A) becomes NaN, which matplotlib leaves as a gap."""
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"row {i}: {key!r} is not a number", field=what, value=value) from None
