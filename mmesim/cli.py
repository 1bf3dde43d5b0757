"""`mmesim ...`: parses arguments, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import sys

from mmesim.errors import MmesimError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmesim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_simulate, _add_profiles, _add_instances, _add_calibrate):
        add(sub)
    return parser


# --- simulate / profiles / instances (core) ----------------------------------------------
def _add_simulate(sub) -> None:
    pass


def _add_profiles(sub) -> None:
    pass


def _add_instances(sub) -> None:
    pass


# --- calibrate (mmesim.calibrate) ---------------------------------------------------------
def _add_calibrate(sub) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except MmesimError as exc:
        print(f"mmesim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmesim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
