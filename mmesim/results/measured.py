"""A measured run is a Run: the adapter from what a load test leaves behind to the records
the simulator produces, so ``summarize()`` is the one function for prediction and measurement.

Inputs, all optional but the request log:
- request logs in the RequestRecords CSV format (``start,end,model,instance,outcome,cold``),
  times in unix seconds: the ones mmesim's Locust users write (``requests-*.csv``), or the
  emulator's request log (which also knows the instance and cold starts);
- ``start.json`` (unix time the load shape started: t = 0 of the run), ``stop.json`` (when
  the test was stopped, and the requests Locust had counted then: requests that end later
  are left out, as one Locust process leaves them out of its statistics; a distributed
  master's count of the last seconds depends on which worker reports reach it before it
  writes its CSVs), ``users.csv`` (user
  count changes as Locust reported them), ``process-*.json`` (CPU each Locust process used);
- Locust's own ``<prefix>_stats_history.csv`` (``--csv-full-history``): the rows the
  reference computed its metrics from, passed to ``summarize(run, rows)``.

Percentiles: the Summary's p50/p95/p99 are exact (numpy's linear rule over successful
requests) for predictions and measurements alike; Locust's bucketed percentiles (about two
significant digits) stay in the Locust CSVs, reproduced by mmesim.results.locust_csv.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmesim.errors import ConfigError
from mmesim.results.locust_csv import read_stats_history
from mmesim.results.records import RequestRecord, Records, Run

LOCUST_PREFIX = "locust"
WORKLOAD_FILE = "workload.json"           # the Workload a load test ran, as `mmesim loadtest` wrote it


@dataclass
class LoadTestInfo:
    """What the load test knew that the logs do not say (written as loadtest.json)."""

    kind: str = "users"                            # the workload's: open loops have no users to count
    user_steps: list[int] = field(default_factory=list)
    request_name: dict[str, str] = field(default_factory=dict)
    duration_s: float | None = None
    instance_type: str = ""
    instance_count: int = 1
    price_usd_per_hour: float = 0.0
    workers: int = 0
    copies: list[int] = field(default_factory=list)
    profiles: list[str] = field(default_factory=list)
    max_models_loaded: int | None = None           # if the endpoint reported it

    def write(self, folder: Path) -> Path:
        path = Path(folder) / "loadtest.json"
        path.write_text(json.dumps(self.__dict__, indent=1))
        return path

    @classmethod
    def read(cls, folder: Path) -> "LoadTestInfo":
        path = Path(folder) / "loadtest.json"
        if not path.is_file():
            return cls()
        data = _json(path, dict)
        try:
            info = cls(**data)
        except TypeError as exc:
            raise ConfigError(f"not a load test description: {exc}", source=str(path)) from None
        for name, kind in (("user_steps", list), ("copies", list), ("profiles", list), ("request_name", dict),
                           ("kind", str), ("instance_type", str), ("instance_count", int),
                           ("price_usd_per_hour", (int, float))):
            if not isinstance(getattr(info, name), kind):
                raise ConfigError(f"expected a {getattr(kind, '__name__', 'number')}", source=str(path), field=name,
                                  value=getattr(info, name))
        return info


def check_same_load_test(folder: str | Path, workload, copies: list[int] | None) -> None:
    """A ConfigError, before anything is simulated, if the load test in ``folder`` ran
    another workload (kind, duration, user steps) or other copies than the prediction's: a
    comparison between the two would read as a model error. Folders without loadtest.json
    (the emulator's own request log) record none of it and pass."""
    path = Path(folder) / "loadtest.json"
    if not path.is_file():
        return
    info = LoadTestInfo.read(Path(folder))
    ran = Path(folder) / WORKLOAD_FILE
    hint = f"give the workload it ran (--workload {ran})" if ran.is_file() else "give the workload it ran"
    checks = [("kind", workload.kind, info.kind),
              ("duration_s", workload.duration_s, info.duration_s),
              ("user_steps", list(workload.user_steps), list(info.user_steps))]
    if copies is not None and info.copies:
        checks.append(("copies", list(copies), list(info.copies)))
        hint += " and its copies (--copies " + ",".join(map(str, info.copies)) + ")"
    for name, predicted, measured in checks:
        if measured is None or measured == predicted or \
                (name == "duration_s" and abs(float(predicted) - float(measured)) < 0.5):
            continue
        raise ConfigError(f"the load test ran {measured!r}, the prediction's is {predicted!r}: {hint}",
                          source=str(path), field=name, value=measured)


def _json(path: Path, kind: type = dict, key: str | None = None):
    """A small JSON file the load test wrote (``key``: the number it holds), or a ConfigError
    naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid JSON: {exc}", source=str(path)) from None
    if not isinstance(data, kind):
        raise ConfigError(f"expected a JSON {'object' if kind is dict else kind.__name__}", source=str(path))
    if key is not None:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("needs a number (unix time)", source=str(path), field=key, value=value)
        return float(value)
    return data


def read_request_log(paths: list[Path], t0: float | None = None, stop: float | None = None) -> tuple[Records, float]:
    """Records from request logs (unix times), shifted so that ``t0`` (default: the first
    start) is 0, without those ending after ``stop``; returns the records in start order and
    the t0 used."""
    rows: list[RequestRecord] = []
    for path in paths:
        for r in Records.read_csv(path):
            if stop is None or r.end <= stop:
                rows.append(r)
    if t0 is None:
        t0 = min((r.start for r in rows), default=0.0)
    rows.sort(key=lambda r: r.start)
    out = Records()
    for r in rows:
        out.add(RequestRecord(r.start - t0, r.end - t0, r.model, r.instance, r.outcome, r.cold))
    return out, t0


def _users(folder: Path, t0: float) -> list[tuple[float, int]]:
    path = folder / "users.csv"
    if not path.is_file():
        return []
    out: list[tuple[float, int]] = []
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            try:
                t, n = max(0.0, float(row["time"]) - t0), int(row["users"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError("needs time,users numbers", source=f"{path}:{line}") from None
            if out and out[-1][0] == t:
                out[-1] = (t, n)
            else:
                out.append((t, n))
    return out


def _users_from_history(rows: list[dict], t0: float) -> list[tuple[float, int]]:
    out: list[tuple[float, int]] = []
    for r in rows:
        if r["Name"] == "Aggregated" and (not out or out[-1][1] != r["User Count"]):
            out.append((max(0.0, r["Timestamp"] - t0), r["User Count"]))
    return out


def _process(path: Path) -> dict:
    """What one Locust process reported: its role, requests sent and CPU seconds."""
    data = _json(path, dict)
    for name, ok in (("role", isinstance(data.get("role"), str)),
                     ("requests", isinstance(data.get("requests"), int) and not isinstance(data.get("requests"), bool)),
                     ("cpu_s", isinstance(data.get("cpu_s"), (int, float)) and not isinstance(data.get("cpu_s"), bool))):
        if not ok:
            raise ConfigError("missing or of the wrong type", source=str(path), field=name, value=data.get(name))
    return data


def measured_run(folder: str | Path, *, prefix: str = LOCUST_PREFIX, request_logs: list[Path] | None = None,
                 info: LoadTestInfo | None = None) -> Run:
    """The Run a load test folder holds (Locust's own history rows in ``locust_history``).

    ``request_logs`` defaults to the folder's ``requests-*.csv``. A Locust run observes
    requests only: cold starts, loads and unloads stay unknown (Run.sources), not 0; the
    emulator's own run (mmesim emulate --out) holds them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError("no such load test folder", source=str(folder))
    info = info or LoadTestInfo.read(folder)
    logs = request_logs if request_logs is not None else sorted(folder.glob("requests-*.csv"))
    if not logs:
        raise ConfigError("no request log (requests-*.csv) in the folder: was it written by mmesim loadtest?",
                          source=str(folder))
    start = folder / "start.json"
    t0 = _json(start, key="t0") if start.is_file() else None
    stop_path = folder / "stop.json"
    stop = _json(stop_path, key="t") if stop_path.is_file() else None
    records, t0 = read_request_log(logs, t0, stop)
    hist_path = folder / f"{prefix}_stats_history.csv"
    rows = read_stats_history(hist_path) if hist_path.is_file() else None
    users = (_users(folder, t0) or (_users_from_history(rows, t0) if rows else [])) if info.kind == "users" else []
    processes = [_process(p) for p in sorted(folder.glob("process-*.json"))]
    senders = [p for p in processes if p["role"] != "master"]
    requests = sum(p["requests"] for p in senders)
    duration = (stop - t0) if stop is not None else (info.duration_s or max(records.end, default=0.0))
    cpu = [p["cpu_s"] for p in senders]
    run = Run(records=records, duration_s=duration, users=users, user_steps=list(info.user_steps),
              request_name=dict(info.request_name), instance_type=info.instance_type,
              instance_count=info.instance_count, price_usd_per_hour=info.price_usd_per_hour,
              max_models_loaded=info.max_models_loaded, kind="measurement", profiles=list(info.profiles),
              copies=list(info.copies), targets=len(info.request_name), generator_workers=len(senders),
              generator_busy_s=cpu, generator_cpu_s_per_request=(sum(cpu) / requests) if requests else None,
              locust_history=rows,
              sources={"requests": "locust", **({"models": "endpoint"} if info.max_models_loaded is not None else {})})
    return run
