"""Issue 13's shared-cores case over every window it was measured in, from the record's data.

The case (tiny-bert x4, 4 users with waits of 0-10 ms) and its slow ramp (1 to 16 users, waits of
50-500 ms) were measured in ten windows of 2026-12-06/07 on this project's 2-vCPU VM, with both
load-test clients, each load test three times against their median
(`python examples/validate_local.py --workloads cores,cores-ramp --client fast|http --repeat 3`).
Each window's figures sit in the JSON file of the record's section that measured it, predicted
with the model of that day (docs/accuracy-this-machine.md); this reads them all back, so the
README's count is arithmetic anyone can redo, not a number typed in:

    python examples/cores_windows.py [--markdown] [--csv FILE]

Prints one row per window and run (errors (predicted - measured) / measured, in percent) and
how many figures land within the targets (throughput 5 %, p50 and p95 10 %), by figure, by
workload and by client. Nothing is measured or simulated here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
FIGURES = ("throughput", "p50", "p95")
TOLERANCE = {"throughput": 0.05, "p50": 0.10, "p95": 0.10}

# (file, where its runs are, the prediction kept for each run: the model as it stood in the
# window, the window where the runs do not name theirs)
SOURCES = (
    ("cores-full-host.json", "runs", "with_late_wait", None),      # windows A-G (section 9)
    ("cores-freed-core.json", "runs", "shipped", None),            # window H, as shipped (section 10)
    ("cores-window-i.json", "runs", "calibrated_here", "I"),       # window I (section 11)
    ("cores-windows-k-l.json", "K", "error", "K"),                 # windows K and L (section 13)
    ("cores-windows-k-l.json", "L", "error", "L"),
)


def runs(docs: Path = DOCS) -> list[dict]:
    """Every run of the case: window, workload, client, measured medians and the errors, one
    row each, in window order; a window measured in more than one file counts once."""
    out, seen = [], set()
    for name, key, prediction, label in SOURCES:
        block = json.loads((docs / name).read_text())[key]
        for r in block["runs"] if isinstance(block, dict) else block:
            window = label or r["window"].split()[0]
            ident = (window, r["workload"], r["client"])
            if ident in seen or prediction not in r:
                continue
            seen.add(ident)
            out.append({"window": window, "workload": r["workload"], "client": r["client"],
                        **{f"measured_{f}": r["measured"][f] for f in FIGURES},
                        **{f"error_{f}": r[prediction][f] for f in FIGURES}})
    return out


def within(row: dict, figure: str) -> bool:
    return abs(row[f"error_{figure}"]) <= TOLERANCE[figure]


def tally(rows: list[dict]) -> tuple[int, int]:
    """(figures within the targets, figures) over ``rows``."""
    return sum(within(r, f) for r in rows for f in FIGURES), len(FIGURES) * len(rows)


def counts(rows: list[dict]) -> dict:
    """Figures within the targets: in all, by figure, by workload and by client."""
    out = {"all": tally(rows)}
    for f in FIGURES:
        out[f] = (sum(within(r, f) for r in rows), len(rows))
    for field in ("workload", "client"):
        for value in sorted({r[field] for r in rows}):
            out[value] = tally([r for r in rows if r[field] == value])
    return out


def table(rows: list[dict], markdown: bool) -> str:
    windows = list(dict.fromkeys(r["window"] for r in rows))
    cols = list(dict.fromkeys((r["workload"], r["client"]) for r in rows))
    cell = {(r["window"], r["workload"], r["client"]): r for r in rows}

    def fmt(r):
        parts = [f"{100 * r[f'error_{f}']:+.1f}" for f in FIGURES]
        if markdown:
            parts = [f"**{p}**" if within(r, f) else p for p, f in zip(parts, FIGURES)]
        return " / ".join(parts)

    head = ["window"] + [f"{w}, {c}" for w, c in cols] + ["within"]
    lines = []
    for w in windows:
        n, of = tally([cell[(w, *c)] for c in cols if (w, *c) in cell])
        lines.append([w] + [fmt(cell[(w, *c)]) if (w, *c) in cell else "-" for c in cols] + [f"{n} of {of}"])
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] +
                         ["| " + " | ".join(line) + " |" for line in lines])
    widths = [max(len(x[i]) for x in [head] + lines) for i in range(len(head))]
    return "\n".join("  ".join(x[i].ljust(widths[i]) for i in range(len(head))) for x in [head] + lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markdown", action="store_true", help="the README's table (within the targets in bold)")
    ap.add_argument("--csv", metavar="FILE", help="also write every run's figures here")
    args = ap.parse_args(argv)
    rows = runs()
    print(table(rows, args.markdown))
    print()
    for name, (n, of) in counts(rows).items():
        print(f"{name}: {n} of {of} within")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
