"""Run many independent simulations: on local processes (default) or a Dask cluster.

Each task carries everything it needs, its seed included, and a result depends on nothing
but its task, so the same tasks give the same results wherever they run; results come back
in task order whatever order they finish in. A rich progress bar counts them on stderr.
A ``Runner`` keeps its processes (or its cluster connection) across batches, so a search
that submits a round at a time pays for start-up once."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmesim.errors import ConfigError, MissingPiece


def default_workers() -> int:
    """Local processes: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Runner:
    """``map(fn, tasks)`` on ``workers`` local processes, or on the Dask scheduler at
    ``cluster`` (tcp://host:8786). Use as a context manager."""

    def __init__(self, cluster: str | None = None, workers: int | None = None, quiet: bool = False):
        self.cluster, self.quiet = cluster, quiet
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise ConfigError("needs at least one worker", field="--workers", value=workers)
        self._pool = self._client = None

    def __enter__(self) -> "Runner":
        if self.cluster:
            try:
                from distributed import Client
            except ImportError:  # pragma: no cover - the [plan] extra brings it
                raise MissingPiece("--cluster needs dask.distributed: pip install 'mmesim[plan]'") from None
            try:
                self._client = Client(self.cluster, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise ConfigError(f"cannot reach the Dask scheduler ({exc})", field="--cluster",
                                  value=self.cluster) from None
        else:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool:
            self._pool.shutdown(cancel_futures=True)
        if self._client:
            self._client.close()

    @property
    def slots(self) -> int:
        """How many tasks run at once."""
        if self._client:
            return max(1, sum(w.get("nthreads", 1) for w in self._client.scheduler_info()["workers"].values()))
        return self.workers

    def map(self, fn: Callable, tasks: Sequence, label: str = "simulating") -> list:
        if not tasks:
            return []
        results: list = [None] * len(tasks)
        err = Console(stderr=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, transient=True, disable=self.quiet or not err.is_terminal) as bar:
            tid = bar.add_task(label, total=len(tasks))
            if self._client:
                from distributed import as_completed as dask_completed
                futures = self._client.map(fn, list(tasks), pure=False)
                index = {f.key: i for i, f in enumerate(futures)}
                for fut in dask_completed(futures):
                    results[index[fut.key]] = fut.result()
                    bar.advance(tid)
            else:
                futures = {self._pool.submit(fn, t): i for i, t in enumerate(tasks)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.advance(tid)
        return results


def run_tasks(fn: Callable, tasks: Sequence, *, cluster: str | None = None, workers: int | None = None,
              label: str = "simulating", quiet: bool = False) -> list:
    """``[fn(t) for t in tasks]`` in parallel, once (a Runner for one batch)."""
    if not tasks:
        return []
    with Runner(cluster, min(workers or default_workers(), len(tasks)), quiet) as runner:
        return runner.map(fn, tasks, label)
