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
    p = sub.add_parser("simulate", help="predict what a load test on an MME will see")
    p.add_argument("--profile", action="append", required=True, metavar="NAME|PATH",
                   help="built-in profile name or profile file; repeat for a heterogeneous endpoint")
    p.add_argument("--instance", required=True, metavar="TYPE", help="e.g. ml.g4dn.2xlarge (see `mmesim instances`)")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--copies", default="auto", metavar="N|N,N,...|auto",
                   help="copies of each model (auto: the reference's max-models-loaded procedure)")
    p.add_argument("--workload", default="blog", metavar="blog|PATH")
    p.add_argument("--threshold", type=float, default=0.90, help="GPU memory threshold (share of NVML total)")
    p.add_argument("--timeout", type=float, default=60.0, help="invocation timeout, s")
    p.add_argument("--max-inflight", type=int, default=None, help="overload limit per instance (default: profiles')")
    p.add_argument("--cold", action="store_true", help="start with no model loaded (default: copies pre-loaded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="DIR", help="write summary.json, Locust CSVs, CloudWatch series, PNGs")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=_simulate)


def _copies(text: str):
    if text == "auto":
        return "auto"
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        from mmesim.errors import ConfigError
        raise ConfigError("expected 'auto', a count >= 1, or one count per profile (2,3)", field="--copies", value=text)
    return values[0] if len(values) == 1 else values


def _simulate(args) -> int:
    from mmesim.endpoint import EndpointConfig
    from mmesim.profile import load_profile
    from mmesim.report.console import progress_bar, print_summary
    from mmesim.results.outputs import write_outputs
    from mmesim.results.summary import summarize
    from mmesim.serde import validate
    from mmesim.sim import simulate
    from mmesim.workload import load_workload

    profiles = [load_profile(p) for p in args.profile]          # every file is checked before anything runs
    endpoint = validate(EndpointConfig, {
        "instance_type": args.instance, "instance_count": args.instance_count, "memory_threshold": args.threshold,
        "invocation_timeout_s": args.timeout, "model_ready_timeout_s": args.timeout,
        "max_inflight_per_instance": args.max_inflight}, source="command line")
    workload = load_workload(args.workload)
    copies = _copies(args.copies)
    with progress_bar("simulating", quiet=args.json) as progress:
        run = simulate(profiles, endpoint, workload, copies=copies, seed=args.seed, warm=not args.cold,
                       progress=progress)
    summary = summarize(run)
    if args.out:
        files = write_outputs(run, summary, args.out)
    if args.json:
        print(summary.model_dump_json(indent=2))
    else:
        print_summary(summary, run)
        if args.out:
            print(f"wrote {len(files)} files to {args.out}: " + ", ".join(sorted(p.name for p in files.values())))
    return 0


def _add_profiles(sub) -> None:
    p = sub.add_parser("profiles", help="list built-in model profiles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_profiles)


def _profiles(args) -> int:
    from mmesim.profile import builtin_profiles, load_profile
    from mmesim.report.console import print_profiles

    profiles = [load_profile(path) for path in builtin_profiles().values()]
    if args.json:
        import json
        print(json.dumps([p.to_dict() for p in profiles], indent=2))
    else:
        print_profiles(profiles)
    return 0


def _add_instances(sub) -> None:
    p = sub.add_parser("instances", help="list the catalogue of instance types and GPUs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_instances)


def _instances(args) -> int:
    from mmesim.catalog import load_catalog
    from mmesim.report.console import print_instances

    catalog = load_catalog()
    if args.json:
        print(catalog.model_dump_json(indent=2))
    else:
        print_instances(catalog)
    return 0


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
