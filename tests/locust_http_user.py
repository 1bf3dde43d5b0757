"""A locustfile for tests/test_locust_real.py: users call /a (fast), /b (slower, every 7th
answered 503) on the test's server, and every request is recorded as Locust logged it.

The record uses the times Locust's own stats stored (the aggregate's and the entry's
last_request_timestamp, and the seconds a failure was counted in, read right after Locust
logged the request), so the test can feed the same requests, in the same order, to mmesim's
Locust arithmetic. Written to $MMESIM_RECORDS at exit.
"""

import json
import os

from locust import HttpUser, between, events, task

records = []


@events.init.add_listener
def _after_locusts_own_listener(environment, **_kw):
    # added at init, after Locust's stats listener: it runs once Locust has logged the request
    def on_request(request_type, name, response_time, response_length, exception=None, **_kw):
        stats = environment.stats
        entry = stats.entries[(name, request_type)]
        record = {"t": stats.total.last_request_timestamp, "t_entry": entry.last_request_timestamp,
                  "ms": response_time, "name": name, "failed": exception is not None}
        if exception is not None:
            # Locust counts a failure in the second of a clock read of its own, taken after the
            # request's (per entry, then again for the total): the latest second holding one
            record["fail_s"] = [max(entry.num_fail_per_sec), max(stats.total.num_fail_per_sec)]
        records.append(record)
    environment.events.request.add_listener(on_request)

    @environment.events.quitting.add_listener
    def _dump(environment, **_kw):
        with open(os.environ["MMESIM_RECORDS"], "w") as fh:
            json.dump({"start_time": environment.stats.total.start_time, "records": records}, fh)


class Caller(HttpUser):
    wait_time = between(0.01, 0.05)

    @task(3)
    def fast(self):
        self.client.get("/a", name="a")

    @task(2)
    def slow(self):
        self.client.get("/b", name="b")
