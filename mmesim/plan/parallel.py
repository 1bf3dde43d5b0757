"""Run many independent simulations: on local processes (default) or a Dask cluster.

Each task carries everything it needs, its seed included, and a result depends on nothing
but its task, so the same tasks give the same results wherever they run; results come back
in task order whatever order they finish in. A rich progress bar counts them on stderr."""

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


def _bar(label: str, total: int, quiet: bool):
    err = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=quiet or not err.is_terminal)


def run_tasks(fn: Callable, tasks: Sequence, *, cluster: str | None = None, workers: int | None = None,
              label: str = "simulating", quiet: bool = False) -> list:
    """``[fn(t) for t in tasks]``, in parallel. ``cluster``: a Dask scheduler address
    (tcp://host:8786); otherwise ``workers`` local processes (default: the usable cores)."""
    if not tasks:
        return []
    results: list = [None] * len(tasks)
    with _bar(label, len(tasks), quiet) as bar:
        task_id = bar.add_task(label, total=len(tasks))
        if cluster:
            _on_dask(fn, tasks, cluster, results, lambda: bar.advance(task_id))
        else:
            n = workers or default_workers()
            if n < 1:
                raise ConfigError("needs at least one worker", field="--workers", value=n)
            with ProcessPoolExecutor(max_workers=min(n, len(tasks))) as pool:
                futures = {pool.submit(fn, t): i for i, t in enumerate(tasks)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.advance(task_id)
    return results


def _on_dask(fn, tasks, address: str, results: list, advance) -> None:
    try:
        from distributed import Client, as_completed as dask_completed
    except ImportError:  # pragma: no cover - the [plan] extra brings it
        raise MissingPiece("--cluster needs dask.distributed: pip install 'mmesim[plan]'") from None
    try:
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler ({exc})", field="--cluster", value=address) from None
    try:
        futures = client.map(fn, list(tasks), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in dask_completed(futures):
            results[index[fut.key]] = fut.result()
            advance()
    finally:
        client.close()
