"""Prediction vs measurement on the terminal: every figure, then every user step."""

from __future__ import annotations

from rich.table import Table

from mmesim.report.console import console


def _num(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if isinstance(v, int) or float(v).is_integer() else f"{v:,.1f}"


def _err(line) -> str:
    if line.error is None:
        return "-"
    if line.figure in ("users", "models"):
        text = f"{line.error:+.0f}"
    else:
        text = f"{100 * line.error:+.1f}%"
    if line.ok is True:
        return f"[green]{text}[/green]"
    if line.ok is False:
        return f"[bold red]{text}[/bold red]"
    return text


def _tol(line) -> str:
    if line.tolerance is None:
        return ""
    return f"±{line.tolerance:g}" if line.figure in ("users", "models") else f"±{100 * line.tolerance:g}%"


def _range(line) -> str:
    if line.measured_range is None:
        return "-"
    text = f"{_num(line.measured_range[0])} - {_num(line.measured_range[1])}"
    return f"[green]{text}[/green]" if line.within_range else text


def _name(line) -> str:
    return f"{line.figure}{'' if line.users is None else f' @{line.users} users'}"


def print_comparison(comparison, title: str = "predicted vs measured", notes=()) -> None:
    """``notes``: the prediction's caveats (its Summary's warnings), after the tables. With
    repeats of the measurement, each figure's measured value is their median, and a column
    shows their range (green where the prediction lies inside it)."""
    repeated = comparison.repeats > 1
    measured = "measured (median)" if repeated else "measured"
    extra = (f"range of {comparison.repeats} runs",) if repeated else ()
    t = Table(title=title)
    for col in ("figure", "predicted", measured, "error", "tolerance", *extra, "measured by"):
        t.add_column(col, justify="left" if col in ("figure", "measured by") else "right")
    for x in comparison.lines:   # "-": nothing observed it (a Locust run cannot see loads), never 0
        t.add_row(x.figure, _num(x.predicted), _num(x.measured), _err(x), _tol(x),
                  *((_range(x),) if repeated else ()), x.source or "-")
    console.print(t)
    if comparison.steps:
        st = Table(title="per user step (requests started at that step)")
        for col in ("users", "figure", "predicted", measured, "error", "tolerance", *extra):
            st.add_column(col, justify="right")
        for x in comparison.steps:
            st.add_row(str(x.users), x.figure, _num(x.predicted), _num(x.measured), _err(x), _tol(x),
                       *((_range(x),) if repeated else ()))
        console.print(st)
    for w in notes:
        console.print(f"[yellow]note (prediction):[/yellow] {w}")
    if comparison.passed:
        console.print("[green]within tolerance[/green]")
    else:
        console.print(f"[bold red]beyond tolerance:[/bold red] {', '.join(_name(x) for x in comparison.failed)}")
    inside = comparison.misses_within_range
    if inside:
        console.print(f"[yellow]within the {comparison.repeats} runs' own range:[/yellow] "
                      f"{', '.join(_name(x) for x in inside)} (the measurement differs from itself by as much)")
