"""Load tests with real Locust: users and shapes driven by the Workload (locustfile.py), the
plan handed to Locust's processes (plan.py), request bodies (payload.py), and the local or
distributed runner returning a measured Run (runner.py)."""

from mmesim.loadtest.runner import LoadTestError, run_loadtest

__all__ = ["run_loadtest", "LoadTestError"]
