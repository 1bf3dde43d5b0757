"""The loop on this machine, end to end: profiles measured on the local Triton -> predict
on instance type ``local`` -> serve the models in a real Triton (SageMaker MME mode) ->
load-test with real Locust -> compare, on workloads the profiles were not fitted on.

    python examples/validate_local.py [--workloads ramp,hetero,burst] [--out out/validate_local]
                                      [--profiles calibration/profiles] [--emulator]
                                      [--client http|fast] [--retime] [--server-trace]
                                      [--host-wakeups out/host_wakeups/host_wakeups.json] [--repeat N]

The profiles are the shipped calibration/profiles/tiny-*-python-cpu.json (made by
`mmesim calibrate ... --cpu-threads 1 --memory-budget 2GiB`, see their provenance; rerun
that command first to calibrate afresh). The load generator runs here too, on the same
cores: its CPU per request, and the share of it inside its own timer, are measured by
short probe load tests per model (not the validated workloads) right before each workload
and go into its generator block, so the prediction includes the client measured where it
runs (``--client``: Locust with python-requests, or its FastHttpUser): one user (so the
timer holds one request's CPU only) after short and after long pauses, four busy users,
and one user pausing seconds, which make the client's CPU per request by its process's
idle and its CPU per second (mmesim.loadtest.probe.measure_client); each comparison also
gives the same measurement predicted with the one-user probe's figure at every pace
(``client_one_pace`` in accuracy.json). The probe also measures what Triton spends per
request, in its server process (HTTP, decoding) and in the model's stub (the execution);
A second probe pauses 0.15-0.35 s between requests (the warmth curves' cold end: this VM's
speed drifts unevenly, 0.52-0.80 of the profile's after short pauses against 0.81-0.98
after long ones within the same two minutes); ``--retime`` predicts with what the two
probes read instead of the profile's figures, each end of the curves scaled by its own
probe (mmesim.loadtest.probe.retimed). It moves a profile to the host's speed of the moment,
not to another processor: one calibrated elsewhere holds that processor's costs and how they
grow after idle (the shipped ones are an Intel Xeon's, see their provenance). The probes run
again right after each workload (and serve the next one with the same models): each
comparison says how fast the host ran before and after the run against the profile, since
the prediction assumes one speed for the whole run; each then also gives the model's figures
with the two probes' speeds averaged (``mmesim.loadtest.probe.between``; in accuracy.json
``around_the_run``): not a prediction, since the second probe ran after the measurement, but
the model's own error with the host's drift during the run taken out. ``--server-trace`` has
Triton time-stamp every request, and each comparison adds the time in the model's queue and
executing (apart for executions that ran alone and those that overlapped another), measured
against the simulator's, how long Triton's threads waited for a core, and, from the model
stubs' own log, each execution's CPU and wait for a core.
Each prediction places woken threads as the profiles' calibration measured this host to
(``mmesim calibrate``'s probe; ``--host-wakeups`` gives a placement measured apart by
examples/host_wakeups.py in the same quiet window, or ``fair``), and a prediction made with a
placement is made again for the same measurement without it (processor sharing), for
comparison. ``--repeat N`` runs each load test N times in a row on the same models and
compares the prediction with their median, showing their range: on a host whose speed
drifts, how far a measurement is from its own repeat bounds how near any prediction can be
judged.

Workloads (each 1-1.5 minutes):
- ramp: closed-loop users 2 -> 24 on tiny-bert (4 copies), to saturation;
- hetero: tiny-bert and tiny-mlp, 3 copies each, Zipf over the 6 copies (uneven traffic
  between the models and among copies);
- burst: open loop on tiny-mlp, 6 req/s, x8 for 15 s, back to 6 req/s;
- cores: tiny-bert x 4, 4 closed-loop users with waits 0-10 ms: short requests sharing 2
  cores with the server's request handling and the client (issue 13);
- cores-2, cores-8: the same pattern on tiny-bert x 2 with 2 users, and x 4 with 8;
- cores-ramp: tiny-bert x 4, 1 to 16 users, waits 0.05-0.5 s;
- churn: 8 copies of tiny-mlp on a 1 GiB budget (about 5 fit), so models load and unload
  on demand: needs the emulator in front of Triton (``--emulator``, mmesim emulate), since
  Triton alone loads only what it is told to; compares loads, unloads, cold starts and
  ModelLoadingWaitTime as well.

Prints one comparison table per workload and writes everything under --out/<workload>/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from rich.table import Table

from mmesim.catalog import host_cpu
from mmesim.endpoint import FAIR, EndpointConfig, read_host_wakeups
from mmesim.errors import ConfigError
from mmesim.loadtest.probe import between, cold_probe_workload, measure_client, measure_request_cost, retimed
from mmesim.loadtest.validate import validate, with_platform
from mmesim.process import machine_busy_s
from mmesim.profile import load_profile
from mmesim.report.console import client_pace_note, console
from mmesim.report.validation import print_comparison
from mmesim.results.compare import compare, parse_tolerance
from mmesim.results.summary import summarize
from mmesim.sim import simulate
from mmesim.sim.mme import target_names
from mmesim.triton.execlog import describe
from mmesim.triton.server import ServerError
from mmesim.units import GiB
from mmesim.workload import Workload

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 2 * GiB                 # the budget the shipped profiles were calibrated with
CHURN_BUDGET = 1 * GiB           # churn: a smaller budget, so that 8 copies do not fit
TOLERANCE = "throughput=0.05,p50=0.10,p95=0.10,users=0"
BUSY_OTHERS = 0.25               # cores used by other processes beyond which a measurement is not quiet


def workloads() -> dict[str, tuple[list[str], list[int], Workload]]:
    """name -> (models, copies, workload)."""
    def ramp(users, seconds, rate):
        return [{"end_s": seconds * (i + 1), "users": u, "spawn_rate": rate} for i, u in enumerate(users)]
    return {
        "ramp": (["tiny-bert"], [4], Workload(
            name="ramp", kind="users", stages=ramp([2, 4, 8, 16, 24], 15, 4), wait_s=(0.05, 0.2),
            user_steps=[2, 4, 8, 16, 24])),
        "hetero": (["tiny-bert", "tiny-mlp"], [3, 3], Workload(
            name="hetero", kind="users", stages=ramp([4, 8, 16], 20, 4), wait_s=(0.05, 0.2),
            popularity={"kind": "zipf", "s": 1.0}, user_steps=[4, 8, 16])),
        "burst": (["tiny-mlp"], [4], Workload(
            name="burst", kind="poisson", rates=[{"end_s": 20, "rate": 6}, {"end_s": 35, "rate": 48},
                                                 {"end_s": 60, "rate": 6}])),
        "cores": (["tiny-bert"], [4], Workload(
            name="cores", kind="users", stages=[{"end_s": 30, "users": 4, "spawn_rate": 4}], wait_s=(0.0, 0.01),
            user_steps=[4])),
        "cores-2": (["tiny-bert"], [2], Workload(
            name="cores-2", kind="users", stages=[{"end_s": 30, "users": 2, "spawn_rate": 4}], wait_s=(0.0, 0.01),
            user_steps=[2])),
        "cores-8": (["tiny-bert"], [4], Workload(
            name="cores-8", kind="users", stages=[{"end_s": 30, "users": 8, "spawn_rate": 8}], wait_s=(0.0, 0.01),
            user_steps=[8])),
        "cores-ramp": (["tiny-bert"], [4], Workload(
            name="cores-ramp", kind="users", stages=ramp([1, 2, 4, 8, 16], 15, 4), wait_s=(0.05, 0.5),
            user_steps=[1, 2, 4, 8, 16])),
        "churn": (["tiny-mlp"], [8], Workload(          # with CHURN_BUDGET about 5 copies fit
            name="churn", kind="users", stages=ramp([2, 4], 45, 2), wait_s=(0.05, 0.2), user_steps=[2, 4])),
    }


def probe(server: "LocalEndpoint", profile, out: Path, client: str, paces: bool = False):
    """What a request of ``profile``'s model costs the client, Triton's server and the model's
    stub, one request at a time on one copy (mmesim.loadtest.probe): (right after each other,
    after long pauses), the two ends of the profile's warmth curves; and with ``paces`` the
    client at two more paces, as a generator by pace (measure_client; else None)."""
    loaded = server.serve([profile], [1])
    try:
        warm, cold = (measure_request_cost(server.url, server.server.pid, profile, 1, out / end, client,
                                           workload=workload, stats_url=server.server.http_url)
                      for end, workload in (("warm", None), ("cold", cold_probe_workload())))
        paced = measure_client(server.url, profile, 1, out / "client", client, warm.client, cold.client) \
            if paces else None
        return (warm, cold), paced
    finally:
        server.unload(loaded)


class LocalEndpoint:
    """A real Triton in SageMaker MME mode with the models packaged as artifacts; copies are
    loaded (extracted, POST /models) before each workload and unloaded after."""

    def __init__(self, models: list[str], workdir: Path, trace: bool = False):
        """``trace``: Triton time-stamps every request into ``self.trace`` (mmesim.triton.trace)."""
        from mmesim.triton.args import ServerOptions
        from mmesim.triton.local import LocalTriton
        from mmesim.triton.packaging import package
        from mmesim.triton.trace import server_args
        self.workdir = workdir
        self.packaged = {m: package(m, "python", workdir / "artifacts" / m, cpu_threads=1) for m in models}
        self.trace = workdir / "trace.json" if trace else None
        self.exec_log = workdir / "executions" if trace else None   # each execution's CPU and wait (triton.execlog)
        if self.exec_log:
            self.exec_log.mkdir(parents=True, exist_ok=True)
        options = ServerOptions(extra_args=server_args(self.trace), exec_log=str(self.exec_log)) if trace else None
        self.server = LocalTriton(options, workdir=workdir / "triton").start()

    @property
    def url(self) -> str:
        return self.server.sagemaker_url

    def serve(self, profiles, copies) -> list[str]:
        from mmesim.calibrate.maxmodels import mme_copy_loader
        from mmesim.triton.client import MMEClient
        client = MMEClient(self.url)
        names = []
        for name, pi, _ in target_names(profiles, copies):
            base, i = name.rsplit("-v", 1)
            mme_copy_loader(client, self.packaged[profiles[pi].model], self.server, self.workdir / "copies", base)(int(i))
            names.append(name)
        return names

    def unload(self, names) -> None:
        from mmesim.triton.client import MMEClient
        client = MMEClient(self.url)
        for n in names:
            client.unload(n)

    def cpu_s(self) -> float:
        """CPU seconds used so far by Triton and its Python-backend stubs."""
        from mmesim.process import tree_cpu_s
        return tree_cpu_s(self.server.pid) or 0.0

    def waited_s(self) -> float | None:
        """Seconds Triton's and its stubs' threads have waited for a core so far."""
        from mmesim.process import tree_run_delay_s
        return tree_run_delay_s(self.server.pid)

    def stop(self) -> None:
        self.server.stop()


class EmulatedEndpoint:
    """`mmesim emulate` over a real Triton: SageMaker's runtime API, models loaded on demand
    from an artifact folder (one tarball per target name) and the least recently used idle
    ones unloaded when the memory budget is full. Its own log gives loads, unloads, cold
    starts and ModelLoadingWaitTime, which a client cannot see."""

    def __init__(self, local: LocalEndpoint, profile_paths: list[Path], profiles, copies, workdir: Path,
                 budget: int):
        import re
        import shutil
        import subprocess
        import sys
        artifacts = workdir / "emulated-models"
        artifacts.mkdir(parents=True, exist_ok=True)
        for name, pi, _ in target_names(profiles, copies):
            shutil.copy(local.packaged[profiles[pi].model].artifact, artifacts / name)
        self.out = workdir / "emulator-out"
        cmd = [sys.executable, "-m", "mmesim.cli", "emulate", "--instance", "local", "--memory-budget",
               str(budget), "--backend", "triton", "--models", str(artifacts), "--port", "0",
               "--endpoint-name", "mmesim", "--out", str(self.out)]
        for path in profile_paths:
            cmd += ["--profile", str(path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=(\S+)", line)
            if m:
                self.url = m.group(1)
                return
        self.stop()
        raise RuntimeError("mmesim emulate did not start:\n" + "".join(lines))

    def stop(self) -> dict:
        """Stop it (SIGTERM: it writes its request log); its summary, if written."""
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        path = self.out / "summary.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def mean_loading_wait_ms(cloudwatch_csv: Path) -> float | None:
    """ModelLoadingWaitTime over the run: the mean of its per-period averages, in ms."""
    import csv
    if not cloudwatch_csv.is_file():
        return None
    values = [float(r["value"]) for r in csv.DictReader(cloudwatch_csv.open())
              if r["metric"] == "ModelLoadingWaitTime" and r["statistic"] == "Average"]
    return sum(values) / len(values) / 1000 if values else None


class CpuShare:
    """Who used this machine's cores during a run: the whole machine (/proc/stat), Triton,
    Locust; the rest is other people's work, which the prediction does not know about."""

    def __init__(self, server: LocalEndpoint):
        self.server = server
        self.busy0, self.triton0 = machine_busy_s(), server.cpu_s()
        self.waited0 = server.waited_s()

    def done(self, wall_s: float, runs) -> dict:
        """Cores busy on average over ``wall_s`` (prediction + load tests + files), and the
        CPU per request of Triton (with its stubs) and of Locust over the load tests ``runs``."""
        busy = machine_busy_s() - self.busy0
        triton, locust = self.server.cpu_s() - self.triton0, sum(sum(r.generator_busy_s) for r in runs)
        n = max(1, sum(len(r.records) for r in runs))
        waited = self.server.waited_s()
        return {"machine_cores_busy": busy / wall_s, "others_cores": (busy - triton - locust) / wall_s,
                "triton_cpu_ms_per_request": 1000 * triton / n, "locust_cpu_ms_per_request": 1000 * locust / n,
                # runnable but not running: what the threads serving a request waited for a core, in all
                "triton_wait_ms_per_request": None if waited is None or self.waited0 is None
                else 1000 * (waited - self.waited0) / n}


def report_probe(m: str, p, cold, profile, client: str, paced=None) -> None:
    """The warm probe ``p``'s figures against the profile's, the cold probe's execution, and
    the client by pace where it was measured (``paced``, a LoadGenerator)."""
    if paced is not None:
        console.print(f"client {client} by pace: {client_pace_note(paced)}")
    console.print(f"probe {m} ({p.requests} requests, one at a time): {client} client "
                  f"{1000 * p.client_cpu_s:.2f} ms CPU per request ({100 * p.client_timed_share:.0f} % "
                  f"inside its timer, timer slack {1000 * p.client_wait_slack_s:.2f} ms); Triton server "
                  f"{1000 * p.server_cpu_s:.2f} + {1000 * p.model_thread_s:.2f} ms (front end + the model's "
                  f"threads), model stub {1000 * p.stub_cpu_s:.2f} ms, hand-off {1000 * p.handoff_s:.2f} ms "
                  f"(profile: {1000 * profile.request_overhead_s:.2f} + decoding + "
                  f"{1000 * profile.model_thread_s:.2f}, {1000 * profile.service[0].seconds:.2f}, "
                  f"{1000 * profile.handoff_s:.2f}); others {p.others_cores:.2f} cores; its executions "
                  f"x{p.execution_ratio(profile):.2f} of the profile's at the probe's pace; after long pauses "
                  f"({cold.requests} requests) the stub {1000 * cold.stub_cpu_s:.2f} ms, "
                  f"x{cold.execution_ratio(profile):.2f}")


def headline(comparison, values: bool = True) -> str:
    """Throughput, p50 and p95 of a comparison: each predicted figure (``values``) and its error."""
    return ", ".join((f"{x.figure} {x.predicted:,.2f} ({100 * x.error:+.1f} %)" if values else f"{100 * x.error:+.1f}%")
                     for x in comparison.lines if x.figure in ("throughput", "p50", "p95") and x.error is not None)


def host_speed_line(speed: dict[str, dict], retime: bool) -> str:
    """The probes' execution ratios (warm, cold) right before and right after a run, and a
    warning where the host's speed moved by more than 10 % in between, or (without
    ``retime``) stood more than 10 % off the profile's: the prediction assumes one speed for
    the whole run."""
    line = "host speed (executions against the profile's, before -> after the run): " + ", ".join(
        f"{m} after 0-10 ms x{r['before']['warm']:.2f} -> x{r['after']['warm']:.2f}, after 0.15-0.35 s "
        f"x{r['before']['cold']:.2f} -> x{r['after']['cold']:.2f}" for m, r in speed.items())
    moved = [m for m, r in speed.items() if any(abs(r["after"][e] / r["before"][e] - 1) > 0.1 for e in r["before"])]
    off = [m for m, r in speed.items() if any(abs(x - 1) > 0.1 for x in r["before"].values())]
    if moved:
        assumed = "the speed before it" if retime else "the profile's"
        line += (f" [yellow](the host's speed moved during the run ({', '.join(moved)}); the prediction "
                 f"assumed {assumed})[/yellow]")
    if off and not retime:
        line += (f" [yellow]({', '.join(off)}: the host runs at another speed than when it was calibrated; "
                 "--retime predicts with the probes' figures)[/yellow]")
    return line


def run(selected: list[str], out: Path, profiles_dir: Path, emulator: bool = False, client: str = "http",
        retime: bool = False, server_trace: bool = False, host_wakeups=None, repeat: int = 1) -> dict:
    """``host_wakeups``: this host's placement of woken threads (a WakePlacement), for the
    prediction; None: the profiles' (their calibration measured it), FAIR: processor sharing.
    ``repeat``: run each workload's load test that many times in a row and compare with their
    median and range (not churn: the emulator's log covers one)."""
    specs = workloads()
    endpoint = EndpointConfig(instance_type="local", memory_budget_bytes=BUDGET, host_wakeups=host_wakeups)
    models = sorted({m for name in selected for m in specs[name][0]})
    profile_of = {m: load_profile(profiles_dir / f"{m}-python-cpu.json") for m in models}
    for m in models:
        elsewhere = profile_of[m].provenance.host_cpu
        if elsewhere and elsewhere != host_cpu():
            console.print(f"[yellow]{m}'s profile was calibrated on {elsewhere}, this host is "
                          f"{host_cpu()}[/yellow]: its CPU costs are another processor's, and so is how they "
                          "grow after idle, which --retime does not move (recalibrate here: --profiles DIR)")
    results = {}
    probed = {}              # each model's latest probe
    paced = {}               # and the client by pace it measured (before a run)
    fresh: set[str] = set()  # models probed since the last workload ran
    with tempfile.TemporaryDirectory(prefix="mmesim-validate-") as tmp:
        server = LocalEndpoint(models, Path(tmp), trace=server_trace)

        def probe_models(mods: list[str], tag: str, paces: bool = False) -> dict[str, dict[str, float]]:
            """Probe each of ``mods`` not probed since the last workload (``paces``: the client
            by pace too, into ``paced``); its execution ratios."""
            for m in mods:
                if m not in fresh or (paces and paced.get(m) is None):
                    probed[m], paced[m] = probe(server, profile_of[m], out / "probe" / tag / m, client, paces)
                    fresh.add(m)
                    report_probe(m, *probed[m], profile_of[m], client, paced[m])
            return {m: {end: c.execution_ratio(profile_of[m]) for end, c in zip(("warm", "cold"), probed[m])}
                    for m in mods}

        try:
            for name in selected:
                mods, copies, wl = specs[name]
                if name == "churn" and not emulator:
                    console.print("[yellow]churn: skipped[/yellow] (needs --emulator: Triton alone loads only what "
                                  "it is told to)")
                    continue
                # the host's speed right before the run (this VM drifts 10-20 % within minutes)
                before = probe_models(mods, name, paces=True)
                now = {m: retimed(profile_of[m], *probed[m]) for m in mods}
                one_pace, generator = probed[mods[0]][0].generator(), paced[mods[0]]
                wl = wl.model_copy(update={"generator": generator})
                profiles = [now[m] if retime else profile_of[m] for m in mods]
                if name == "churn":                 # the emulator's own Triton: counted among "others"
                    if repeat > 1:
                        console.print("churn: one load test, not repeated (the emulator's log covers one)")
                    share, began = CpuShare(server), time.monotonic()
                    emu = EmulatedEndpoint(server, [profiles_dir / f"{m}-python-cpu.json" for m in mods], profiles,
                                           copies, Path(tmp) / name, CHURN_BUDGET)
                    try:
                        churn_endpoint = endpoint.model_copy(update={"memory_budget_bytes": CHURN_BUDGET})
                        v = validate(profiles, churn_endpoint, wl, copies, endpoint_url=emu.url, endpoint_name="mmesim",
                                     protocol="sagemaker", out=out / name, tolerance=parse_tolerance(TOLERANCE),
                                     client=client, warm=False)
                    finally:
                        emulated = emu.stop()
                    v = with_platform(v, emulated, "emulator log", out / name)   # what Locust cannot see
                    v.platform = {
                        "loads": (v.predicted_summary.loads, emulated.get("loads")),
                        "unloads": (v.predicted_summary.unloads, emulated.get("unloads")),
                        "cold_starts": (v.predicted_summary.cold_starts, emulated.get("cold_starts")),
                        "ModelLoadingWaitTime_ms": (mean_loading_wait_ms(out / name / "prediction" / "cloudwatch.csv"),
                                                    mean_loading_wait_ms(emu.out / "cloudwatch.csv"))}
                    console.print("platform (predicted, measured by the emulator): " + ", ".join(
                        f"{k} {p} / {m}" for k, (p, m) in v.platform.items()))
                    v.cpu = share.done(time.monotonic() - began, [v.measured])
                else:
                    loaded = server.serve(profiles, copies)
                    share, began = CpuShare(server), time.monotonic()
                    try:
                        v = validate(profiles, endpoint, wl, copies, endpoint_url=server.url, protocol="triton",
                                     out=out / name, tolerance=parse_tolerance(TOLERANCE), client=client,
                                     server_trace=server.trace, exec_log=server.exec_log, repeat=repeat)
                        v.cpu = share.done(time.monotonic() - began, [r for r, _ in v.repeats])  # before the stubs exit
                    finally:
                        server.unload(loaded)
                print_comparison(v.comparison, f"{name}: {', '.join(mods)} x {copies} on local, predicted vs measured",
                                 notes=v.predicted_summary.warnings)

                def against(alt_profiles, alt_endpoint=endpoint, alt_wl=wl):
                    """The same measurement against the model with other profiles, endpoint or workload."""
                    return compare(summarize(simulate(alt_profiles, alt_endpoint, alt_wl, copies=copies)),
                                   v.measured_summaries, parse_tolerance(TOLERANCE))
                if v.predicted_summary.host_wakeups and name != "churn":   # the same measurement, processor sharing
                    v.without_host_wakeups = against(profiles, endpoint.model_copy(update={"host_wakeups": FAIR}))
                    console.print("with processor sharing instead (a woken thread on an idle core at once): "
                                  + headline(v.without_host_wakeups))
                if name != "churn":           # the same measurement, the client's one-user probe at every pace
                    v.one_pace = against(profiles, alt_wl=wl.model_copy(update={"generator": one_pace}))
                    console.print("with the client's one-user probe at every pace instead "
                                  f"({1e3 * one_pace.cpu_s_per_request:.2f} ms a request): " + headline(v.one_pace))
                if v.executions is not None:
                    console.print(describe(v.executions), highlight=False)
                console.print("cores busy during the run: " + ", ".join(
                    f"{k} {'-' if val is None else format(val, '.2f')}" for k, val in v.cpu.items()))
                if name != "churn" and v.cpu["others_cores"] > BUSY_OTHERS:
                    console.print(f"[yellow]other work kept {v.cpu['others_cores']:.2f} cores busy[/yellow]: the "
                                  "prediction does not know about it, and it lengthens the measured tail most "
                                  "(one busy background core made the measured p95 36-86 % longer than a quiet run); measure again "
                                  "on a quiet machine")
                v.probe = {m: {"warm": probed[m][0].to_dict(), "cold": probed[m][1].to_dict()} for m in mods}
                v.generator = generator
                fresh.clear()                        # and right after it: did it change meanwhile?
                after = probe_models(mods, name + "-after")
                v.host_speed = {m: {"before": before[m], "after": after[m]} for m in mods}
                console.print(host_speed_line(v.host_speed, retime))
                if name != "churn":           # the model given the host's speed during the run, not a prediction
                    around = [between(now[m], retimed(profile_of[m], *probed[m])) for m in mods]
                    v.around = against(around)
                    console.print("with the host's speed around the run (the probes before and after, averaged: "
                                  "not a prediction, the model's error apart from the drift's): " + headline(v.around))
                results[name] = v
        except OSError as exc:       # refused, reset: a server that died says why in its log, kept in --out
            if server.server.running:
                raise
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(server.server.log_path, out / "tritonserver.log")
            raise ServerError(f"tritonserver exited (code {server.server.process.returncode}) during the run "
                              f"({exc}); its whole log: {out / 'tritonserver.log'}", server.server.log_tail()) from exc
        finally:
            server.stop()
    summary = {name: {**v.comparison.to_dict(), "cpu": v.cpu, "platform": getattr(v, "platform", None),
                      "client": client, "retimed": retime, "host_wakeups": v.predicted_summary.host_wakeups,
                      "generator_cpu_s_per_request": v.generator.cpu_s_per_request,
                      "generator_timed_share": v.generator.timed_share,
                      "probe": v.probe, "host_speed": v.host_speed,
                      "generator": v.generator.model_dump(),
                      "without_host_wakeups": getattr(v, "without_host_wakeups", None) and
                      v.without_host_wakeups.to_dict(),
                      "client_one_pace": getattr(v, "one_pace", None) and v.one_pace.to_dict(),
                      "around_the_run": getattr(v, "around", None) and v.around.to_dict()}
               for name, v in results.items()}
    (out / "accuracy.json").write_text(json.dumps(summary, indent=2) + "\n")
    return results


def accuracy_table(results: dict) -> Table:
    t = Table(title="predicted vs measured on this machine (errors: (predicted - measured) / measured)")
    for col in ("workload", "throughput", "p50", "p95", "max users", "requests", "cores used by others",
                "host speed before / after", "around the run: throughput, p50, p95"):
        t.add_column(col, justify="right")
    for name, v in results.items():
        line = {x.figure: x for x in v.comparison.lines}

        def cell(fig):
            x = line[fig]
            if x.predicted is None and x.measured is None:
                return "-"
            err = "" if x.error is None else (f" ({x.error:+.0f})" if fig == "users" else f" ({100 * x.error:+.1f}%)")
            fmt = (lambda v: "-" if v is None else f"{v:,.1f}")
            return f"{fmt(x.predicted)} / {fmt(x.measured)}{err}"
        t.add_row(name, cell("throughput"), cell("p50"), cell("p95"), cell("users"), cell("requests"),
                  f"{v.cpu['others_cores']:.2f}",
                  ", ".join(f"x{r['before']['warm']:.2f} / x{r['after']['warm']:.2f}, "
                            f"cold x{r['before']['cold']:.2f} / x{r['after']['cold']:.2f}"
                            for r in v.host_speed.values()),
                  "-" if getattr(v, "around", None) is None else headline(v.around, values=False))
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="ramp,hetero,burst")
    ap.add_argument("--out", default="out/validate_local")
    ap.add_argument("--profiles", default=str(ROOT / "calibration" / "profiles"))
    ap.add_argument("--emulator", action="store_true", help="serve through mmesim emulate (churn needs it)")
    ap.add_argument("--client", default="http", choices=["http", "fast"],
                    help="the load generator: Locust with python-requests, or its FastHttpUser")
    ap.add_argument("--retime", action="store_true",
                    help="predict with the CPU costs per request the probe measured, not the profile's")
    ap.add_argument("--server-trace", action="store_true",
                    help="Triton time-stamps every request and the models log each execution: time in the "
                         "model's queue and executing, measured vs predicted, and each execution's CPU and wait "
                         "for a core (tracing costs Triton some CPU)")
    ap.add_argument("--host-wakeups", metavar="PATH|fair",
                    help="predict with this placement of woken threads (examples/host_wakeups.py's JSON; 'fair': "
                         "processor sharing) instead of the one the profiles' calibration measured")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run each load test N times in a row: compared with their median, with their range "
                         "(how far the measurement is from itself)")
    args = ap.parse_args(argv)
    selected = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(selected) - set(workloads())
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(sorted(unknown))}; known: {', '.join(workloads())}")
    if args.repeat < 1:
        ap.error(f"--repeat: a whole number >= 1, not {args.repeat}")
    try:                         # a bad profile or placement file: said, before any server starts
        wakeups = read_host_wakeups(args.host_wakeups) if args.host_wakeups else None
        results = run(selected, Path(args.out), Path(args.profiles), args.emulator, args.client, args.retime,
                      args.server_trace, wakeups, args.repeat)
    except (ConfigError, ServerError) as exc:   # a bad input file, or the server died: said, not a traceback
        console.print(str(exc), style="red", markup=False, highlight=False)
        return 2
    console.print(accuracy_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
