"""`mmesim ...`: parses arguments, calls the library, prints. No logic of its own."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmesim.errors import MmesimError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmesim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_simulate, _add_profiles, _add_instances, _add_calibrate, _add_emulate, _add_package, _add_live,
                _add_loadtest, _add_validate, _add_plan, _add_sweep, _add_report):
        add(sub)
    return parser


# --- simulate / profiles / instances (core) ----------------------------------------------
HOST_WAKEUPS_HELP = ("--instance local: how this host places woken threads, as examples/host_wakeups.py --out "
                     "measured it (its host_wakeups.json), or 'fair' (on an idle core at once: processor sharing); "
                     "default: as the profiles' calibration measured it")

GENERATOR_HELP = ("the load generator block (a LoadGenerator JSON/YAML file, e.g. what `mmesim loadtest "
                  "--measure-client` wrote) in place of the workload's")


def _workload(args):
    """The workload named by --workload, with --generator's block where given; without
    --workload, the one the first --measured load test ran (its workload.json), else blog."""
    from mmesim.results.measured import WORKLOAD_FILE
    from mmesim.serde import load
    from mmesim.workload import LoadGenerator, load_workload
    name = args.workload
    if name is None:
        ran = Path(args.measured[0]) / WORKLOAD_FILE if getattr(args, "measured", None) else None
        name = ran if ran is not None and ran.is_file() else "blog"
    wl = load_workload(name)
    if getattr(args, "generator", None):      # (model_copy keeps the file it was read from, for errors)
        wl = wl.model_copy(update={"generator": load(LoadGenerator, args.generator)})
    return wl


def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="predict what a load test on an MME will see")
    p.add_argument("--profile", action="append", required=True, metavar="NAME|PATH",
                   help="built-in profile name or profile file; repeat for a heterogeneous endpoint")
    p.add_argument("--instance", metavar="TYPE", help="e.g. ml.g4dn.2xlarge, or local: this host (see `mmesim instances`)")
    p.add_argument("--memory-budget", metavar="SIZE", help="--instance local: the memory models may fill, e.g. 4GiB "
                                                          "(default: a quarter of RAM, as `mmesim calibrate`)")
    p.add_argument("--host-wakeups", metavar="PATH|fair", help=HOST_WAKEUPS_HELP)
    p.add_argument("--endpoint", metavar="PATH", help="an EndpointConfig file (YAML/JSON); flags override it")
    p.add_argument("--instance-count", type=int, default=None)
    p.add_argument("--copies", default="auto", metavar="N|N,N,...|auto",
                   help="copies of each model (auto: the reference's max-models-loaded procedure)")
    p.add_argument("--workload", default="blog", metavar="blog|PATH")
    p.add_argument("--generator", metavar="PATH", help=GENERATOR_HELP)
    p.add_argument("--threshold", type=float, default=None, help="GPU memory threshold (share of NVML total; 0.9)")
    p.add_argument("--timeout", type=float, default=None, help="invocation timeout, s (60)")
    p.add_argument("--max-inflight", type=int, default=None, help="overload limit per instance (default: profiles')")
    p.add_argument("--cold", action="store_true", help="start with no model loaded (default: copies pre-loaded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="DIR", help="write summary.json, Locust CSVs, CloudWatch series, PNGs")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--html", action="store_true", help="also write --out/report.html: one self-contained page")
    p.set_defaults(func=_simulate)


def _ints(text: str, flag: str) -> list[int]:
    """A comma-separated list of positive integers, or a ConfigError naming the flag."""
    from mmesim.errors import ConfigError
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError("expected positive integers separated by commas", field=flag, value=text) from None
    if not values or min(values) < 1:
        raise ConfigError("expected positive integers", field=flag, value=text)
    return values


def _copies(text: str):
    if text == "auto":
        return "auto"
    values = _ints(text, "--copies")
    return values[0] if len(values) == 1 else values


def _simulate(args) -> int:
    from mmesim.outputs import write_outputs
    from mmesim.profile import load_profile
    from mmesim.report.console import progress_bar, print_summary
    from mmesim.results.summary import summarize
    from mmesim.sim import simulate

    profiles = [load_profile(p) for p in args.profile]          # every file is checked before anything runs
    endpoint = _endpoint(args)
    workload = _workload(args)
    copies = _copies(args.copies)
    if args.html and not args.out:
        from mmesim.errors import ConfigError
        raise ConfigError("--html writes report.html into the output folder: give --out DIR too", field="--html")
    if args.out:
        check_out_folder(args.out)
    with progress_bar("simulating", quiet=args.json) as progress:
        run = simulate(profiles, endpoint, workload, copies=copies, seed=args.seed, warm=not args.cold,
                       progress=progress)
    summary = summarize(run)
    if args.out:
        files = write_outputs(run, summary, args.out)
        if args.html:
            from mmesim.report.html import run_page
            files["report"] = run_page(args.out)
    if args.json:
        print(summary.model_dump_json(indent=2))
    else:
        print_summary(summary, run)
        if args.out:
            print(f"wrote {len(files)} files to {args.out}: " + ", ".join(sorted(p.name for p in files.values())))
    return 0


def _endpoint(args):
    """EndpointConfig from --endpoint's file, with the flags given on the command line on top."""
    from mmesim.endpoint import EndpointConfig
    from mmesim.errors import ConfigError
    from mmesim.serde import read_fields, validate

    data = read_fields(args.endpoint) if args.endpoint else {}
    flags = {"instance_type": args.instance, "instance_count": args.instance_count, "memory_threshold": args.threshold,
             "invocation_timeout_s": args.timeout, "model_ready_timeout_s": args.timeout,
             "max_inflight_per_instance": args.max_inflight, "memory_budget_bytes": _bytes(args.memory_budget)}
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.host_wakeups:
        from mmesim.endpoint import read_host_wakeups
        data["host_wakeups"] = read_host_wakeups(args.host_wakeups)
    if "instance_type" not in data:
        raise ConfigError("say which instance type: --instance TYPE, or instance_type in an --endpoint file",
                          field="--instance")
    return validate(EndpointConfig, data, source=args.endpoint or "command line")


def check_out_folder(path):
    """--out: a folder, or one that can be made (checked before the work, not after)."""
    from mmesim.serde import check_out_folder as check
    return check(path)


def _bytes(text: str | None) -> int | None:
    from mmesim.calibrate.memory import parse_bytes
    return parse_bytes(text)


def _add_profiles(sub) -> None:
    p = sub.add_parser("profiles", help="list built-in model profiles")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_profiles)


def _profiles(args) -> int:
    from mmesim.profile import load_profile, shipped_profiles
    from mmesim.report.console import print_profiles

    profiles = [load_profile(path) for path in shipped_profiles().values()]
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
        import json
        data = catalog.model_dump(mode="json")
        data["instances"] = {it.name: it.model_dump(mode="json") for it in catalog.listed()}
        print(json.dumps(data, indent=2))
    else:
        print_instances(catalog)
    return 0


# --- calibrate (mmesim.calibrate) ---------------------------------------------------------
def _add_calibrate(sub) -> None:
    p = sub.add_parser("calibrate", help="measure a model in a real Triton server and write its ModelProfile",
                       description="Package a model for a SageMaker MME with Triton, run it in a real Triton "
                                   "(local process or container), measure memory, load/unload, latency by batch and "
                                   "concurrency, decode cost and overlap, and write a ModelProfile JSON.")
    p.add_argument("--model", required=True,
                   help="built-in name (resnet50, convnext_base, vit_large_patch16_224, bert-base-uncased, "
                        "roberta-large, tiny-mlp, tiny-cnn, tiny-bert) or a .py (build_model()), TorchScript or "
                        ".onnx file")
    p.add_argument("--framework", default="python", choices=["python", "pytorch", "onnx", "tensorrt"])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--runner", default="local", choices=["local", "docker"])
    p.add_argument("--max-models", action="store_true", help="also run the reference's max-models-loaded procedure")
    p.add_argument("--threshold", type=float, default=0.9, help="memory fraction that stops --max-models (0.9)")
    p.add_argument("--memory-budget", help="the 'total' memory of --max-models, e.g. 4GiB (default: a quarter of "
                                           "host RAM on a CPU, the whole GPU on a GPU, where it is a cap)")
    p.add_argument("--max-copies", type=int, default=200, help="upper bound on copies loaded by --max-models")
    p.add_argument("--copies", type=int, default=2, help="copies loaded to measure per-copy memory and overlap (2)")
    p.add_argument("--input", action="append", dest="inputs", metavar="NAME:DTYPE:D1,D2",
                   help="an input of a user's model, without the batch dimension (repeat per input)")
    p.add_argument("--max-batch", type=int, help="max_batch_size of the Triton config (default: the model's)")
    p.add_argument("--batches", help="batch sizes to time, comma-separated (default 1,2,4,... max batch, until one "
                                     "execution takes --stop-batch-s)")
    p.add_argument("--stop-batch-s", type=float, default=1.0,
                   help="do not time larger batches once an execution takes this long, s (1; the profile extrapolates)")
    p.add_argument("--scaling", help="copies executing at once, to find the device's ceiling (default 1,2,4,8 on a "
                                     "GPU; on a CPU up to twice the copies that fill its cores)")
    p.add_argument("--quick", action="store_true", help="a first look: 3 repeats, concurrency <= 2, 2 copies at once")
    p.add_argument("--concurrency", default="1,2,4", help="closed-loop client counts, comma-separated (1,2,4)")
    p.add_argument("--repeats", type=int, default=5, help="timed executions per batch size (5)")
    p.add_argument("--cycles", type=int, default=3, help="load/unload cycles of one copy, for the memory left behind "
                   "and the model's own unload time, each fresh copy's working memory by batch (3; 0: skip all three)")
    p.add_argument("--warmth-s", type=float, default=2.0,
                   help="CPU: seconds of batch-1 requests paced at each of 0, 2, 4, 6, 8, 10, 50, 250, 1000 ms apart, for the "
                        "profile's host_warmth (how much longer an execution takes after the model idled; 2; 0: skip)")
    p.add_argument("--placement-s", type=float, default=4.0,
                   help="CPU: seconds of a scheduler probe (no Triton) before the server starts, for the profile's "
                        "host_wakeups (how this host places a thread woken beside a running one; 4; 0: skip)")
    p.add_argument("--cpu-threads", type=int, help="torch threads per Python-backend model instance "
                                                   "(default: torch's, all cores)")
    p.add_argument("--image", help="docker runner: Triton image (default: the calibration image of containers/)")
    p.add_argument("--tritonserver", help="local runner: tritonserver binary (default: PATH, then nvidia-pytriton)")
    p.add_argument("--out", help="profile JSON to write, or a folder for <name>.json (default calibration/profiles/); a "
                                 "<name>.calibration.json report with every trace goes beside it")

    def run(args) -> int:
        import shlex

        from rich.console import Console

        from mmesim.calibrate.run import CalibrateOptions, calibrate
        from mmesim.calibrate.table import load_table, max_models_table, service_table, summary_table
        from mmesim.report.console import phases

        console = Console(stderr=True)
        options = CalibrateOptions(
            model=args.model, framework=args.framework, device=args.device, runner=args.runner,
            copies=args.copies, max_models=args.max_models, threshold=args.threshold,
            memory_budget=args.memory_budget, max_copies=args.max_copies, inputs=args.inputs,
            max_batch=args.max_batch, batches=_ints(args.batches, "--batches") if args.batches else None,
            concurrency=_ints(args.concurrency, "--concurrency"), repeats=args.repeats, cpu_threads=args.cpu_threads,
            cycles=args.cycles, warmth_s=args.warmth_s, placement_s=args.placement_s,
            scaling=_ints(args.scaling, "--scaling") if args.scaling else None, stop_batch_s=args.stop_batch_s, quick=args.quick,
            image=args.image,
            binary=args.tritonserver, command="mmesim " + shlex.join(args.argv))
        options.check()
        folder = not args.out or args.out.endswith("/") or Path(args.out).is_dir()
        check_out_folder((args.out or "calibration/profiles/") if folder else Path(args.out).parent)
        with phases(after_s=0) as update:
            at = {"i": 0, "n": 1, "name": ""}

            def progress(message: str) -> None:
                console.log(message)
                update("calibrating", at["i"], at["n"], f"{at['name']}: {message}")

            def phase(i: int, n: int, name: str) -> None:
                at.update(i=i, n=n, name=f"phase {i + 1}/{n} {name}")
                console.log(at["name"])
                update("calibrating", i, n, at["name"])
            result = calibrate(options, progress, phase)
        out = Path(args.out or "calibration/profiles/")
        if out.is_dir() or str(args.out or "/").endswith("/"):
            out = out / f"{result.profile.name}.json"
        result.profile.save(out)
        report = result.save_report(out.with_name(out.stem + ".calibration.json"))
        stdout = Console()
        for table in (summary_table(result), service_table(result), load_table(result), max_models_table(result)):
            if table is not None:
                stdout.print(table)
        stdout.print(f"profile: {out}\nreport:  {report}")
        return 0

    p.set_defaults(func=run)


# --- plan / sweep (mmesim.plan) ----------------------------------------------------------
def _add_plan(sub) -> None:
    p = sub.add_parser("plan", help="cheapest instance type, count and framework meeting SLOs for a model mix",
                       description="Search instance type x count x framework x memory threshold by simulation and "
                                   "print a ranked plan (or, when nothing meets the SLOs, what fails and by how much).")
    p.add_argument("mix", metavar="MIX.yaml", help="models, traffic, SLOs, candidates, budget (examples/plan_mix.yaml)")
    p.add_argument("--out", metavar="DIR", help="write plan.csv/.parquet, simulations.csv, plots and report.html")
    p.add_argument("--cluster", metavar="tcp://HOST:8786", help="run the simulations on this Dask scheduler")
    p.add_argument("--workers", type=int, help="local processes (default: the usable cores)")
    p.add_argument("--json", action="store_true", help="print the ranked table and the misses as JSON")

    def run(args) -> int:
        from mmesim.plan import load_mix, plan
        from mmesim.plan.report import print_plan, write_plan

        mix, profiles = load_mix(args.mix)
        if args.out:
            check_out_folder(args.out)
        result = plan(mix, profiles, cluster=args.cluster, workers=args.workers, quiet=args.json)
        if args.json:
            import json
            hosting = result.hosting
            print(json.dumps({"ranked": result.ranked, "infeasible": result.infeasible,
                              "capacity_rps": result.capacity, "left_out": result.left_out,
                              "hosting": [o.row() for o in hosting.options] if hosting else None,
                              "hosting_verdict": hosting.verdict if hosting else None}, indent=2, default=str))
        else:
            print_plan(result)
        if args.out:
            files = write_plan(result, args.out)
            if not args.json:
                print(f"wrote {len(files)} files to {args.out}: " + ", ".join(sorted(files)))
        return 0 if result.feasible else 1

    p.set_defaults(func=run)


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="simulate every combination of PARAM=v1,v2,... in parallel",
                       description="PARAM is an EndpointConfig field (instance_type, instance_count, "
                                   "memory_threshold, ...), autoscaling.FIELD, workload.FIELD[.FIELD], copies, "
                                   "profile or seed. Writes results.csv/.parquet and report.html.")
    p.add_argument("params", nargs="+", metavar="PARAM=v1,v2,...")
    p.add_argument("--profile", action="append", metavar="NAME|PATH", help="as for simulate (repeat)")
    p.add_argument("--instance", metavar="TYPE")
    p.add_argument("--endpoint", metavar="PATH", help="an EndpointConfig file: the base every point changes")
    p.add_argument("--workload", default="blog", metavar="blog|PATH")
    p.add_argument("--copies", default="auto", metavar="N|N,N,...|auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/sweep", metavar="DIR")
    p.add_argument("--cluster", metavar="tcp://HOST:8786", help="run on this Dask scheduler")
    p.add_argument("--workers", type=int, help="local processes (default: the usable cores)")

    def run(args) -> int:
        from mmesim.plan.report import console
        from mmesim.plan.sweep import SweepBase, parse_params, sweep, write_sweep

        base = SweepBase.from_cli(args.profile or [], args.instance, args.endpoint, args.workload, args.copies,
                                  args.seed)
        grid = parse_params(args.params)
        check_out_folder(args.out)
        rows = sweep(base, grid, cluster=args.cluster, workers=args.workers)
        files = write_sweep(rows, grid, args.out)
        console.print(f"{len(rows)} simulations; wrote " + ", ".join(str(f) for f in files.values()))
        return 0

    p.set_defaults(func=run)


# --- loadtest / validate (mmesim.loadtest) -------------------------------------------------
def _loadtest_flags(p, required_endpoint: bool) -> None:
    p.add_argument("--endpoint-url", required=required_endpoint, metavar="URL",
                   help="the emulator or a live endpoint (sagemaker protocol), or tritonserver's SageMaker port")
    p.add_argument("--endpoint-name", metavar="NAME", help="SageMaker endpoint name (sagemaker protocol)")
    p.add_argument("--protocol", default="sagemaker", choices=["sagemaker", "triton"],
                   help="sagemaker: boto3 InvokeEndpoint; triton: POST /models/{target}/invoke (tritonserver "
                        "--allow-sagemaker)")
    p.add_argument("--payload", default="json", choices=["json", "binary"],
                   help="KServe v2 JSON (the reference's) or Triton's binary tensors")
    p.add_argument("--client", default="http", choices=["http", "fast"],
                   help="http: python-requests (boto3 for sagemaker); fast: Locust's FastHttpUser, a fraction of "
                        "the CPU per request")
    p.add_argument("--workers", type=int, default=0, help="Locust worker processes (0: one local process)")
    p.add_argument("--region", default=None, help="AWS region for boto3 (default: AWS_DEFAULT_REGION or us-east-1)")


def _add_loadtest(sub) -> None:
    p = sub.add_parser("loadtest", help="run a real Locust load test against an endpoint and summarise it",
                       description="Real Locust users, driven by the same Workload as a prediction; writes Locust's "
                                   "CSVs (full history), the request log, summary.json and the prediction's charts.")
    _loadtest_flags(p, required_endpoint=True)
    p.add_argument("--profile", action="append", required=True, metavar="NAME|PATH",
                   help="profile of each model the endpoint serves (names the targets and builds the payloads)")
    p.add_argument("--copies", required=True, metavar="N|N,N,...", help="copies of each profile's model to target")
    p.add_argument("--workload", default="blog", metavar="blog|PATH")
    p.add_argument("--instance", default="", metavar="TYPE", help="what serves the endpoint (for cost; optional)")
    p.add_argument("--web-ui", type=int, metavar="PORT", help="serve Locust's web UI on this port while it runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/loadtest", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.add_argument("--measure-client", action="store_true",
                   help="instead of the workload: measure the load generator itself, four short load tests on the "
                        "first profile's copies (one user after short and long pauses, four busy users, one user "
                        "pausing seconds), and write its CPU per request by pace and per second to --out/"
                        "generator.json (for --generator, or a workload's generator block)")
    p.add_argument("--probe-seconds", type=float, default=8.0, metavar="S",
                   help="--measure-client: each probe's length (the long-pause ones run longer; default 8)")
    p.set_defaults(func=_loadtest)


def _loadtest(args) -> int:
    from mmesim.catalog import load_catalog
    from mmesim.loadtest import run_loadtest
    from mmesim.profile import load_profile
    from mmesim.report.console import live_figures, print_summary, progress_bar
    from mmesim.outputs import write_outputs
    from mmesim.results.summary import summarize
    from mmesim.workload import load_workload

    profiles = [load_profile(p) for p in args.profile]
    copies = _ints(args.copies, "--copies")
    if args.measure_client:
        return _measure_client(args, profiles[0], copies[0])
    price = load_catalog().instance(args.instance).price_usd_per_hour if args.instance else 0.0
    aws = {"region_name": args.region} if args.region else {}
    with progress_bar("load test", quiet=args.json, after_s=0) as update:
        run = run_loadtest(args.endpoint_url, args.endpoint_name, load_workload(args.workload), profiles,
                           copies * len(profiles) if len(copies) == 1 else copies, Path(args.out),
                           workers=args.workers, protocol=args.protocol, payload=args.payload, web_ui=args.web_ui,
                           seed=args.seed, client=args.client, instance_type=args.instance,
                           price_usd_per_hour=price, progress=lambda t, end, live: update(t, end, live_figures(live)),
                           **aws)
    summary = summarize(run)
    files = write_outputs(run, summary, args.out)
    if args.json:
        print(summary.model_dump_json(indent=2))
    else:
        print_summary(summary, run)
        print(f"wrote {args.out}: locust_*.csv (Locust's own), " + ", ".join(sorted(p.name for p in files.values())))
    return 0


def _measure_client(args, profile, copies: int) -> int:
    """`mmesim loadtest --measure-client`: the load generator by pace, as generator.json."""
    from mmesim.errors import ConfigError
    from mmesim.loadtest.probe import measure_client
    from mmesim.report.console import client_pace_note, console, status_line

    if args.probe_seconds < 2:
        raise ConfigError("each probe needs at least 2 s", field="--probe-seconds", value=args.probe_seconds)
    if args.workers:
        raise ConfigError("the client is measured as one Locust process", field="--workers", value=args.workers)
    out = Path(args.out)
    with status_line(quiet=args.json) as say:
        gen = measure_client(args.endpoint_url, profile, copies, out, args.client, seconds=args.probe_seconds,
                             on_host=True, protocol=args.protocol, endpoint_name=args.endpoint_name,
                             progress=lambda name: say(f"measuring the client: {name} probe"))
    text = gen.model_dump_json(indent=2)
    (out / "generator.json").write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    console.print(f"{args.client} client: {client_pace_note(gen)}")
    console.print(f"wrote {out / 'generator.json'} (on_host: true, for a prediction of instance type local; set it "
                  "false where the client runs elsewhere)")
    return 0


def _add_validate(sub) -> None:
    p = sub.add_parser("validate", help="predict a load test, run it (or read one), compare figure by figure",
                       description="Simulates first, then load-tests the endpoint (unless --measured names a load test "
                                   "folder), prints every figure and user step predicted vs measured with relative "
                                   "errors, writes comparison.json/csv and overlay.png, and exits 1 beyond tolerance.")
    p.add_argument("--profile", action="append", required=True, metavar="NAME|PATH")
    p.add_argument("--instance", metavar="TYPE|local")
    p.add_argument("--memory-budget", metavar="SIZE", help="--instance local: memory the models may fill")
    p.add_argument("--host-wakeups", metavar="PATH|fair", help=HOST_WAKEUPS_HELP)
    p.add_argument("--endpoint", metavar="PATH", help="an EndpointConfig file; flags override it")
    p.add_argument("--instance-count", type=int, default=None)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--max-inflight", type=int, default=None)
    p.add_argument("--copies", default="auto", metavar="N|N,N,...|auto",
                   help="copies per profile (default: the --measured load test's, else as many as fit)")
    p.add_argument("--workload", default=None, metavar="blog|PATH",
                   help="default: the workload the --measured load test ran (its workload.json), else blog")
    p.add_argument("--generator", metavar="PATH", help=GENERATOR_HELP)
    p.add_argument("--measured", metavar="DIR", action="append",
                   help="a folder written by mmesim loadtest (instead of --endpoint-url); once per repeat of the same "
                        "load test")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="run the load test N times in a row: each figure is compared with their median and shows "
                        "their range (how far the measurement is from itself)")
    p.add_argument("--platform-log", metavar="DIR", help="what `mmesim emulate --out` wrote during that load test: "
                                                        "cold starts, loads, unloads (a load test cannot see them)")
    p.add_argument("--server-trace", metavar="FILE", help="Triton's per-request trace of that endpoint (tritonserver "
                                                          "--trace-config triton,file=FILE ...level=TIMESTAMPS, rate=1): "
                                                          "time in the model's queue and executing, measured vs "
                                                          "predicted")
    p.add_argument("--exec-log", metavar="DIR", help="the folder the models' stubs logged each execution to "
                                                     "(tritonserver started with MMESIM_EXEC_LOG=DIR; models packaged "
                                                     "by mmesim): CPU and wait for a core per execution, measured")
    _loadtest_flags(p, required_endpoint=False)
    p.add_argument("--tolerance", default=None, metavar="FIG=REL,...",
                   help="figures checked: throughput, latency, p50, p95, p99 (relative), users, models (absolute); "
                        "default throughput=0.05,p50=0.10,p95=0.10")
    p.add_argument("--check-steps", action="store_true", help="hold every user step to the tolerances too")
    p.add_argument("--cold", action="store_true", help="predict a start with no model loaded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/validate", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON on stdout")
    p.add_argument("--html", action="store_true", help="also write --out/report.html: one self-contained page")
    p.set_defaults(func=_validate)


def _validate(args) -> int:
    import json

    from mmesim.loadtest.validate import validate
    from mmesim.profile import load_profile
    from mmesim.report.console import live_figures, phases, placement_note
    from mmesim.report.validation import print_comparison
    from mmesim.results.compare import parse_tolerance

    profiles = [load_profile(p) for p in args.profile]
    tolerance = parse_tolerance(args.tolerance)
    aws = {"region_name": args.region} if args.region else {}
    with phases(quiet=args.json, after_s=0) as update:
        v = validate(profiles, _endpoint(args), _workload(args), _copies(args.copies),
                     endpoint_url=args.endpoint_url, endpoint_name=args.endpoint_name, measured=args.measured,
                     repeat=args.repeat, out=args.out, tolerance=tolerance, check_steps=args.check_steps, seed=args.seed,
                     warm=not args.cold, workers=args.workers, protocol=args.protocol, payload=args.payload,
                     client=args.client, platform_log=args.platform_log, server_trace=args.server_trace,
                     exec_log=args.exec_log,
                     progress=lambda phase, t, end, live: update(phase, t, end, "" if phase.startswith("1/")
                                                                 else live_figures(live)), **aws)
    if args.html:
        from mmesim.report.html import run_page
        run_page(args.out)
    if args.json:
        print(json.dumps(v.comparison.to_dict(), indent=2))
    else:
        predicted = v.predicted_summary
        print_comparison(v.comparison, f"{', '.join(v.predicted.profiles)} on {v.predicted.instance_type}: "
                                       "predicted vs measured", notes=predicted.warnings + (
                             [placement_note(predicted.host_wakeups)] if predicted.host_wakeups else []))
        if v.executions is not None:
            from mmesim.triton.execlog import describe
            print(describe(v.executions))
        print(f"wrote {args.out}: comparison.json, comparison.csv, overlay.png, prediction/, measurement/"
              + (f" (and measurement-2/ ... -{len(v.repeats)}/)" if len(v.repeats) > 1 else "")
              + (", report.html" if args.html else ""))
    return 0 if v.comparison.passed else 1

# --- report (mmesim.report.html) -----------------------------------------------------------
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of a run or a comparison folder",
                       description="Reads a folder written by simulate --out, loadtest or validate and writes one "
                                   "HTML page: summary, per-step tables, failures by cause, cost, charts embedded.")
    p.add_argument("folder", metavar="DIR")
    p.add_argument("--out", default=None, metavar="FILE", help="default: DIR/report.html")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from mmesim.report.html import run_page
    print(f"wrote {run_page(args.folder, args.out)}")
    return 0


# --- emulate / package (mmesim.emulator) ----------------------------------------------------
def _add_emulate(sub) -> None:
    p = sub.add_parser("emulate", help="serve a SageMaker-compatible multi-model endpoint on this machine",
                       description="A local SageMaker MME: boto3's sagemaker-runtime client works against it "
                                   "unchanged (endpoint_url= or AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME). Ctrl-C stops it "
                                   "and writes the request log (summary.json, Locust CSVs) to --out.")
    p.add_argument("--instance", metavar="TYPE|local", help="catalogue instance type, or local")
    p.add_argument("--models", metavar="DIR|s3://bucket/prefix",
                   help="where TargetModel artifacts live (<prefix>/<TargetModel>); without it, only endpoints "
                        "created through the control plane (boto3's sagemaker client) are served")
    p.add_argument("--backend", default="virtual", choices=["triton", "virtual"])
    p.add_argument("--profile", action="append", default=[], metavar="NAME|PATH",
                   help="model profile (memory, load and execution times); repeat per model; needed by virtual")
    p.add_argument("--instance-count", type=int, default=1)
    p.add_argument("--endpoint-name", default="mmesim")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0: any free port")
    p.add_argument("--out", default=None, metavar="DIR", help="write the request log here on shutdown")
    p.add_argument("--memory-budget", default=None, help="memory models may use per instance on local (or a CPU "
                                                          "Triton), e.g. 4GiB")
    p.add_argument("--threshold", type=float, default=0.9, help="share of memory models may fill (0.9)")
    p.add_argument("--ready-timeout", type=float, default=60.0,
                   help="seconds before a request for a loading model gets ModelNotReadyException (60)")
    p.add_argument("--invocation-timeout", type=float, default=60.0,
                   help="seconds before an unanswered request gets ModelError, the container going on (60)")
    p.add_argument("--s3-endpoint-url", default=None, help="S3 endpoint for s3:// models (e.g. a moto server)")
    p.add_argument("--cache-dir", default=None, help="disk cache of extracted models (default: a temporary folder)")
    p.add_argument("--max-inflight", type=int, default=None,
                   help="requests in flight per instance beyond which it answers ServiceUnavailable, as the "
                        "simulator sheds (default: the smallest max_inflight of the profiles, else none)")
    p.add_argument("--cache-size", default="20GiB", help="disk cache of extracted models per endpoint (20GiB)")
    p.add_argument("--max-model-bytes", default=None, help="refuse (ModelError) an artifact unpacking past this, "
                                                           "e.g. 8GiB (default: the instance's memory)")
    p.add_argument("--host-wakeups", metavar="PATH|fair", help="the virtual backend on " + HOST_WAKEUPS_HELP)
    p.add_argument("--max-unpack-ratio", type=float, default=100.0,
                   help="refuse an artifact unpacking past this many times its packed size (100; 64 MiB free)")
    p.add_argument("--auth", metavar="ACCESS_KEY:SECRET", action="append", default=[],
                   help="verify SigV4 signatures with this key pair (repeatable); default: any credentials")
    p.add_argument("--tritonserver", default=None, help="triton backend: tritonserver binary")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_emulate)


def _emulate(args) -> int:
    from mmesim.calibrate.memory import parse_bytes
    from mmesim.emulator.emulator import EmulatorConfig, serve
    from mmesim.endpoint import host_placement, read_host_wakeups
    from mmesim.errors import ConfigError
    from mmesim.profile import load_profile
    from mmesim.report.console import placement_text

    keys = {}
    for pair in args.auth:
        key, sep, secret = pair.partition(":")
        if not (key and sep and secret):
            raise ConfigError("expected ACCESS_KEY:SECRET", field="--auth", value=pair)
        keys[key] = secret
    config = EmulatorConfig(
        instance=args.instance, models=args.models, backend=args.backend,
        profiles=[load_profile(p) for p in args.profile], instance_count=args.instance_count,
        endpoint_name=args.endpoint_name, host=args.host, port=args.port, out=Path(args.out) if args.out else None,
        memory_budget_bytes=parse_bytes(args.memory_budget), threshold=args.threshold,
        ready_timeout_s=args.ready_timeout, invocation_timeout_s=args.invocation_timeout,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        s3_endpoint_url=args.s3_endpoint_url, tritonserver=args.tritonserver, seed=args.seed,
        cache_bytes=parse_bytes(args.cache_size, "--cache-size"), keys=keys or None, max_inflight=args.max_inflight,
        max_model_bytes=parse_bytes(args.max_model_bytes, "--max-model-bytes"), max_unpack_ratio=args.max_unpack_ratio,
        host_wakeups=read_host_wakeups(args.host_wakeups) if args.host_wakeups else None)

    placed = host_placement(config.host_wakeups, config.profiles, args.instance) if args.backend == "virtual" else None

    def ready(url: str) -> None:
        what = (f"endpoint '{args.endpoint_name}' ({args.instance_count} x {args.instance}, {args.backend} backend"
                + (f"; {placement_text(placed.model_dump())}" if placed else "") + ")"
                if args.models else "no endpoint yet (create one with boto3's sagemaker client)")
        print(f"mmesim emulate: {what} on {url}\nexport AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url} "
              f"AWS_ENDPOINT_URL_SAGEMAKER={url}", flush=True)

    runs, files = serve(config, on_ready=ready)
    print(f"mmesim emulate: {sum(len(run.records) for _, run in runs)} requests" +
          (f"; wrote {len(files)} files to {args.out}" if files else ""), flush=True)
    return 0


def _add_package(sub) -> None:
    p = sub.add_parser("package", help="package a model for an MME: <model>-v0.tar.gz ... as the reference named copies")
    p.add_argument("--model", required=True, help="built-in name or a .py/TorchScript/.onnx file")
    p.add_argument("--framework", default="python", choices=["python", "pytorch", "onnx", "tensorrt"])
    p.add_argument("--copies", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the config's instance kind)")
    p.add_argument("--input", action="append", dest="inputs", metavar="NAME:DTYPE:D1,D2")
    p.add_argument("--max-batch", type=int)
    p.add_argument("--trt-profile", metavar="MIN,OPT,MAX", help="TensorRT optimisation profile batch sizes, apart "
                                                                 "from --max-batch (default 1,max,max)")
    p.add_argument("--warmup-batch", type=int, help="a warm-up batch Triton runs at load (TensorRT default: max batch)")
    p.add_argument("--out", required=True, metavar="DIR")

    def run(args) -> int:
        from mmesim.errors import ConfigError
        from mmesim.triton.packaging import package_copies
        profile = _ints(args.trt_profile, "--trt-profile") if args.trt_profile else None
        if profile is not None and len(profile) != 3:
            raise ConfigError("expected MIN,OPT,MAX", field="--trt-profile", value=args.trt_profile)
        paths = package_copies(args.model, args.framework, args.out, args.copies, device=args.device,
                               inputs=args.inputs, max_batch_size=args.max_batch,
                               trt_profile=tuple(profile) if profile else None, warmup_batch=args.warmup_batch)
        print(f"wrote {len(paths)} artifacts to {args.out}: {paths[0].name}" + (f" ... {paths[-1].name}" if len(paths) > 1 else ""))
        return 0

    p.set_defaults(func=run)


# --- live (mmesim.live) -------------------------------------------------------------------
def _add_live(sub) -> None:
    p = sub.add_parser("live", help="deploy a real SageMaker MME, load-test it, read CloudWatch, tear it down",
                       description="Live mode creates billed AWS resources. It prints the estimated cost first and "
                                   "refuses to start without --yes-spend; a state file records what it creates, so "
                                   "`mmesim live teardown --state FILE` removes it after a crash.")
    steps = p.add_subparsers(dest="step", required=True)

    def deployment(q) -> None:
        q.add_argument("--models", required=True, metavar="DIR", help="folder of model.tar.gz artifacts to upload")
        q.add_argument("--bucket", required=True, help="S3 bucket for the artifacts (created, and deleted, if missing)")
        q.add_argument("--prefix", default="mmesim", help="key prefix: ModelDataUrl is s3://BUCKET/PREFIX/ (mmesim)")
        q.add_argument("--instance", required=True, metavar="TYPE", help="e.g. ml.g4dn.2xlarge")
        q.add_argument("--instance-count", type=int, default=1)
        q.add_argument("--region", default="us-east-1")
        q.add_argument("--role", required=True, metavar="ARN", help="SageMaker execution role ARN")
        q.add_argument("--image", help="container image URI (default: SageMaker's Triton image for --region)")
        q.add_argument("--name", help="base name of model, config and endpoint (default mmesim-<utc time>)")
        q.add_argument("--yes-spend", action="store_true", help="confirm the estimated cost; nothing starts without it")
        for service in ("sagemaker", "s3", "cloudwatch", "runtime"):
            q.add_argument(f"--{service}-endpoint-url", metavar="URL", help=f"{service} endpoint (rehearsal: the "
                                                                            "emulator or moto)")

    def measuring(q) -> None:
        q.add_argument("--workload", default="blog", metavar="blog|PATH")
        q.add_argument("--profile", action="append", required=True, metavar="NAME|PATH")
        q.add_argument("--copies", required=True, metavar="N|N,N,...", help="copies of each profile's model")
        q.add_argument("--workers", type=int, default=0, help="Locust worker processes (0: in-process)")
        q.add_argument("--payload", default="json", choices=["json", "binary"])
        q.add_argument("--out", required=True, metavar="DIR")

    for name, text in (("deploy", "upload artifacts, create model, config and endpoint, wait for InService"),
                       ("run", "deploy, load-test, read CloudWatch, then delete everything (always)")):
        q = steps.add_parser(name, help=text)
        deployment(q)
        q.add_argument("--state", required=True, metavar="FILE", help="state file recording what is created")
        if name == "run":
            measuring(q)
        else:
            q.add_argument("--workload", default="blog", metavar="blog|PATH", help="for the cost estimate")
        q.set_defaults(func=_live)
    q = steps.add_parser("loadtest", help="load-test a deployed endpoint and read its CloudWatch metrics")
    q.add_argument("--state", required=True, metavar="FILE")
    measuring(q)
    q.set_defaults(func=_live)
    q = steps.add_parser("teardown", help="delete everything a state file records (idempotent)")
    q.add_argument("--state", required=True, metavar="FILE")
    q.set_defaults(func=_live)


def _live(args) -> int:
    import mmesim.live as live
    from mmesim.report.console import status_line
    from mmesim.workload import load_workload

    if args.step == "teardown":
        live.teardown(args.state)
        return 0
    workload = load_workload(args.workload)
    if args.step == "loadtest":
        from mmesim.profile import load_profile
        dep = live.Deployment.load(args.state)
        run = live.loadtest(dep, workload, [load_profile(p) for p in args.profile], _ints(args.copies, "--copies"),
                            args.out, workers=args.workers, payload=args.payload)
        points = live.metrics(dep, args.out)
        print(f"measured {len(run.records)} requests; {len(points)} CloudWatch datapoints; outputs in {args.out}")
        return 0
    print(live.estimate_cost(args.instance, args.instance_count, workload.duration_s).describe())
    plan = live.LivePlan.from_models_dir(
        args.models, bucket=args.bucket, prefix=args.prefix, instance_type=args.instance,
        instance_count=args.instance_count, region=args.region, role_arn=args.role, image=args.image, name=args.name,
        sagemaker_endpoint_url=args.sagemaker_endpoint_url, s3_endpoint_url=args.s3_endpoint_url,
        cloudwatch_endpoint_url=args.cloudwatch_endpoint_url, runtime_endpoint_url=args.runtime_endpoint_url)
    if args.step == "deploy":
        with status_line() as say:
            dep = live.deploy(plan, args.state, yes_spend=args.yes_spend, progress=say)
        print(f"endpoint {dep.endpoint_name} is InService; delete it with: mmesim live teardown --state {args.state}")
        return 0
    from mmesim.profile import load_profile
    with status_line() as say:
        result = live.run_live(plan, args.state, workload, [load_profile(p) for p in args.profile],
                               _ints(args.copies, "--copies"), Path(args.out), yes_spend=args.yes_spend,
                               workers=args.workers, payload=args.payload, progress=say)
    print(f"measured {len(result.run.records)} requests; outputs in {args.out}; everything created was deleted")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv      # what was asked, for provenance (calibrate records its own command line)
    try:
        return args.func(args) or 0
    except MmesimError as exc:
        print(f"mmesim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:       # an output folder that cannot be made, a full disk, a port taken
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"mmesim: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmesim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
