"""Locust CSV writer/reader: Locust's arithmetic by hand, exact file text, round trips, errors."""

import hashlib

import pytest

from mmesim.errors import ConfigError
from mmesim.results import locust_csv as L
from mmesim.results.records import (MODEL_NOT_READY, OK, OVERLOADED, TIMEOUT, Records, RequestRecord,
                                    Run)


def tiny_run() -> Run:
    """Binary-exact times: a: 250, 125, 62.5 ms (last fails 503); b: 2000 ms (429)."""
    recs = Records()
    for start, end, model, outcome in [(0.0, 0.25, "a-v0", OK), (0.5, 0.625, "a-v1", OK),
                                       (1.0, 1.0625, "a-v0", OVERLOADED), (2.0, 4.0, "b-v0", MODEL_NOT_READY)]:
        recs.add(RequestRecord(start, end, model, 0, outcome, False))
    return Run(records=recs, duration_s=5.0, request_name={"a-v0": "a", "a-v1": "a", "b-v0": "b"})


# -- Locust's arithmetic, against Locust's own functions -----------------------------------------
# Locust is imported in a child process: importing it monkey-patches the interpreter (gevent).

LOCUST_SIDE = """
import json, sys
from collections import Counter
from locust.stats import (PERCENTILES_TO_REPORT, bucket_response_time, calculate_response_time_percentile,
                          get_readable_percentiles)
ask = json.load(sys.stdin)
hists = [Counter(bucket_response_time(v) for v in vs) for vs in ask["samples"]]
json.dump({"buckets": [bucket_response_time(v) for v in ask["values"]],
           "percentiles": [[calculate_response_time_percentile(h, len(vs), p) for p in PERCENTILES_TO_REPORT]
                           for h, vs in zip(hists, ask["samples"])],
           "report": PERCENTILES_TO_REPORT, "labels": get_readable_percentiles(PERCENTILES_TO_REPORT)}, sys.stdout)
"""


@pytest.fixture(scope="module")
def locust_says():
    import json
    import subprocess
    import sys

    import numpy as np
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(5, 2, 20000),
                             # exact and near ties at every scale (Python rounds half to even)
                             [0.5, 1.5, 62.5, 63.5, 99.5, 125.0, 135.0, 155.0, 994.9999999, 995.0, 1050.0,
                              1150.0, 9950.0, 10500.0, 11500.0, 58760.0, 0.15 * 1000, 1.005 * 1000, 1e-9]]).tolist()
    samples = [rng.lognormal(5, 1.5, n).tolist() for n in (1, 2, 7, 100, 1001, 20000)]
    ask = {"values": values, "samples": samples}
    out = subprocess.run([sys.executable, "-c", LOCUST_SIDE], input=json.dumps(ask), capture_output=True,
                         text=True, check=True, timeout=120)
    return ask, json.loads(out.stdout)


def test_buckets_equal_locusts_including_ties(locust_says):
    from mmesim.results.locust import bucket_keys
    ask, said = locust_says
    assert bucket_keys(ask["values"]).tolist() == said["buckets"]


def test_percentile_rule_by_hand():
    b = {10: 1, 20: 1, 30: 1, 40: 1}
    # keep = int(4 * p); walk down from 40 until at most `keep` requests remain below.
    assert [L.response_time_percentile(b, 4, p) for p in (0.25, 0.5, 0.66, 0.75, 0.9, 1.0)] == [20, 30, 30, 40, 40, 40]
    assert L.response_time_percentile({100: 3, 200: 1}, 4, 0.5) == 100
    assert L.response_time_percentile({}, 0, 0.5) == 0


def test_histogram_percentiles_equal_locusts(locust_says):
    import numpy as np

    from mmesim.results.locust import bucket_index, bucket_keys, histogram_percentiles
    ask, said = locust_says
    for values, expected in zip(ask["samples"], said["percentiles"]):
        hist = np.bincount(bucket_index(bucket_keys(values)))
        assert histogram_percentiles(hist, len(values), said["report"]) == expected


def test_percentile_columns_are_locusts(locust_says):
    _, said = locust_says
    assert list(L.PERCENTILES) == said["report"]
    assert list(L.PERCENTILE_COLUMNS) == said["labels"]


@pytest.mark.parametrize("times, median", [([62.5], 62.5), ([1049.0], 1049.0), ([99.6], 99.6), ([147.0], 147.0),
                                           ([140.0, 147.0, 190.0], 150)])
def test_median_is_bucketed_then_clamped_into_min_max(times, median):
    recs = Records()
    for ms in times:
        recs.add(RequestRecord(0.0, ms / 1000, "m", 0, OK, False))
    row = L.stats_rows(Run(records=recs, duration_s=5.0))[0]
    assert row[L.STATS_COLUMNS.index("Median Response Time")] == pytest.approx(median)


# -- _stats.csv ---------------------------------------------------------------------------------

def test_stats_rows_by_hand():
    rows = L.stats_rows(tiny_run())
    a, b, agg = rows
    assert a == ["InvokeEndpoint", "a", 3, 1, 120, 437.5 / 3, 62.5, 250.0, 0.0, 0.75, 0.25,
                 120, 120, 250, 250, 250, 250, 250, 250, 250, 250, 250]
    assert b == ["InvokeEndpoint", "b", 1, 1, 2000, 2000.0, 2000.0, 2000.0, 0.0, 0.25, 0.25] + [2000] * 11
    assert agg == ["", "Aggregated", 4, 2, 250, 609.375, 62.5, 2000.0, 0.0, 1.0, 0.5,
                   250, 250, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000, 2000]


def test_stats_file_text_and_request_type(tmp_path):
    path = L.write_stats(tiny_run(), tmp_path / "p_stats.csv", request_type="sagemaker")
    lines = path.read_bytes().decode().split("\r\n")
    assert lines[0] == ",".join(L.STATS_COLUMNS)
    assert lines[1] == "sagemaker,a,3,1,120,145.83333333333334,62.5,250.0,0.0,0.75,0.25,120,120," + ",".join(["250"] * 9)
    assert lines[3].startswith(",Aggregated,4,2,250,609.375,")
    assert lines[4] == ""


def test_requests_unfinished_at_duration_are_not_logged():
    run = tiny_run()
    run.duration_s = 3.0          # b's 429 arrives at 4.0, after Locust stopped
    names = [r[1] for r in L.stats_rows(run)]
    assert names == ["a", "Aggregated"]
    assert L.stats_rows(run)[-1][2:4] == [3, 1]
    assert [r[1] for r in L.failure_rows(run)] == ["a"]


def test_empty_run_writes_na_percentiles(tmp_path):
    run = Run(records=Records(), duration_s=10.0)
    (agg,) = L.stats_rows(run)
    assert agg == ["", "Aggregated", 0, 0, 0, 0.0, 0, 0, 0, 0.0, 0.0] + ["N/A"] * 11
    path = L.write_stats(run, tmp_path / "e_stats.csv")
    assert L.read_stats(path)[0]["50%"] is None


# -- _failures.csv ------------------------------------------------------------------------------

def test_failures_by_cause_with_first_and_last_seen(tmp_path):
    run = tiny_run()
    run.records.add(RequestRecord(2.0, 3.5, "a-v1", 0, OVERLOADED, False))
    rows = L.failure_rows(run, epoch=1_700_000_000)
    expected = [["InvokeEndpoint", "a", "ServiceUnavailable", 2, "2023-11-14T22:13:21Z", "2023-11-14T22:13:23Z"],
                ["InvokeEndpoint", "b", "ModelNotReadyException", 1, "2023-11-14T22:13:24Z", "2023-11-14T22:13:24Z"]]

    def locust_key(r):  # Locust sorts errors by sha256 of "method.name.repr(error)"
        return hashlib.sha256(f"{r[0]}.{r[1]}.{r[2]!r}".encode()).hexdigest()

    assert rows == sorted(expected, key=locust_key)
    back = L.read_failures(L.write_failures(run, tmp_path / "p_failures.csv", epoch=1_700_000_000))
    assert {(r["Name"], r["Error"], r["Occurrences"]) for r in back} == {("a", OVERLOADED, 2), ("b", MODEL_NOT_READY, 1)}


@pytest.mark.parametrize("text, cause", [
    ("ServiceUnavailable", OVERLOADED),
    ("ModelNotReadyException('An error occurred (ModelNotReadyException) when calling the InvokeEndpoint "
     "operation: Model not ready')", MODEL_NOT_READY),
    ("ReadTimeoutError('Read timeout on endpoint URL: \"https://x/invocations\"')", TIMEOUT),
    ("something else", "something else")])
def test_failure_cause_from_measured_error_text(text, cause):
    assert L.failure_cause(text) == cause


# -- _stats_history.csv -------------------------------------------------------------------------

def history_row(ts, users, name, rps, pct, total, fails, avg, method="InvokeEndpoint"):
    row = {"Timestamp": ts, "User Count": users, "Type": method, "Name": name, "Requests/s": rps,
           "Failures/s": 0.0, "Total Request Count": total, "Total Failure Count": fails,
           "Total Median Response Time": 150, "Total Average Response Time": avg,
           "Total Min Response Time": 62.5, "Total Max Response Time": 250.0, "Total Average Content Size": 0.0}
    row.update(dict(zip(L.PERCENTILE_COLUMNS, pct)))
    return row


def test_history_written_in_locust_order_and_read_back(tmp_path):
    rows = [history_row(1_700_000_000, 0, "Aggregated", 0, [None] * 11, 0, 0, 0, method=""),
            history_row(1_700_000_001, 10, "a", 0.75, [120] * 11, 3, 1, 437.5 / 3)]
    shuffled = [dict(reversed(list(r.items())), extra="ignored") for r in rows]
    path = L.write_stats_history(shuffled, tmp_path / "p_stats_history.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(L.HISTORY_COLUMNS)
    assert lines[1] == "1700000000,0,,Aggregated,0.000000,0.000000," + ",".join(["N/A"] * 11) + ",0,0,150,0,62.5,250.0,0.0"
    assert lines[2] == ("1700000001,10,InvokeEndpoint,a,0.750000,0.000000," + ",".join(["120"] * 11)
                        + ",3,1,150,145.83333333333334,62.5,250.0,0.0")
    back = L.read_stats_history(path)
    assert back[1] == {**rows[1], "Requests/s": 0.75}
    assert back[0]["50%"] is None and back[0]["Type"] == ""


def test_history_percentiles_written_as_locust_ints(tmp_path):
    row = history_row(1, 1, "a", 1.0, [170.0, 199.9] + [None] * 9, 1, 0, 1.0)
    line = L.write_stats_history([row], tmp_path / "h.csv").read_text().splitlines()[1]
    assert ",170,199,N/A," in line


def test_history_writer_rejects_missing_column(tmp_path):
    row = history_row(1, 1, "a", 1.0, [1] * 11, 1, 0, 1.0)
    del row["Total Failure Count"]
    with pytest.raises(ConfigError, match="row 0 lacks column.*Total Failure Count"):
        L.write_stats_history([row], tmp_path / "h.csv")


def test_reads_a_real_locust_history_text(tmp_path):
    # As Locust 2.x writes it with --csv-full-history: current rps with six decimals, N/A early on.
    header = ",".join(L.HISTORY_COLUMNS)
    text = (header + "\r\n"
            "1679912345,10,InvokeEndpoint,resnet50,3.500000,0.000000,160,170,170,180,190,200,200,210,210,210,210,"
            "35,0,160,164.83101,98.2211,212.66,0\r\n"
            "1679912345,10,,Aggregated,3.500000,0.000000,160,170,170,180,190,200,200,210,210,210,210,"
            "35,0,160,164.83101,98.2211,212.66,0\r\n")
    path = tmp_path / "m_stats_history.csv"
    path.write_text(text)
    rows = L.read_stats_history(path)
    assert rows[0]["Name"] == "resnet50" and rows[0]["User Count"] == 10
    assert rows[0]["Requests/s"] == 3.5 and rows[0]["Total Average Response Time"] == 164.83101
    assert rows[1]["Name"] == "Aggregated" and rows[1]["Type"] == ""


def test_reader_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad_stats_history.csv"
    good = ["1", "1", "T", "a", "1.0", "0.0"] + ["1"] * 11 + ["1", "0", "1", "1.0", "1", "1", "0"]
    bad = list(good)
    bad[L.HISTORY_COLUMNS.index("Total Request Count")] = "lots"
    path.write_text("\n".join([",".join(L.HISTORY_COLUMNS), ",".join(good), ",".join(bad)]) + "\n")
    with pytest.raises(ConfigError) as err:
        L.read_stats_history(path)
    msg = str(err.value)
    assert f"{path}:3" in msg and "Total Request Count" in msg and "'lots'" in msg


def test_reader_errors_on_short_row_missing_header_and_empty_file(tmp_path):
    short = tmp_path / "short.csv"
    short.write_text(",".join(L.HISTORY_COLUMNS) + "\n1,2,3\n")
    with pytest.raises(ConfigError, match=r"short.csv:2: 3 values for 24 columns"):
        L.read_stats_history(short)
    nohead = tmp_path / "nohead.csv"
    nohead.write_text("Timestamp,Name\n1,a\n")
    with pytest.raises(ConfigError, match=r"nohead.csv:1: .*'User Count'"):
        L.read_stats_history(nohead)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty.csv:1: empty file"):
        L.read_stats(empty)
    with pytest.raises(ConfigError, match="cannot read"):
        L.read_stats(tmp_path / "absent.csv")


# -- all three files ----------------------------------------------------------------------------

def test_write_locust_csv_takes_rows_or_a_function(tmp_path):
    run = tiny_run()
    rows = [history_row(1, 10, "a", 0.75, [120] * 11, 3, 1, 145.8)]
    out = L.write_locust_csv(run, tmp_path / "pred", history=lambda r: rows)
    assert {k: p.name for k, p in out.items()} == {"stats": "pred_stats.csv", "stats_history": "pred_stats_history.csv",
                                                   "failures": "pred_failures.csv"}
    assert L.read_stats_history(out["stats_history"])[0]["Total Request Count"] == 3
    out2 = L.write_locust_csv(run, tmp_path / "pred2", history=rows)
    assert out2["stats_history"].read_text() == out["stats_history"].read_text()


def test_write_locust_csv_defaults_to_locusts_history_with_same_request_type(tmp_path):
    from mmesim.results.locust import history
    run = tiny_run()
    out = L.write_locust_csv(run, tmp_path / "p", request_type="sagemaker")
    back = L.read_stats_history(out["stats_history"])
    expected = L.read_stats_history(L.write_stats_history(history(run, request_type="sagemaker"), tmp_path / "h.csv"))
    assert back == expected and len(back) == 6 + 5 + 2      # Aggregated t=0..5, a from t=1, b from t=4
    assert {r["Type"] for r in back if r["Name"] != "Aggregated"} == {"sagemaker"}
    assert L.read_stats(out["stats"])[0]["Type"] == "sagemaker"


def test_stats_agree_with_summary_history_totals(tmp_path):
    """Our _stats.csv and summary.history's last row apply the same Locust rules to the same run."""
    summary = pytest.importorskip("mmesim.results.summary")
    import random
    rnd = random.Random(7)
    recs = Records()
    for i in range(2000):
        s = rnd.uniform(0, 60)
        recs.add(RequestRecord(s, s + rnd.lognormvariate(-1.8, 0.6), f"m-v{i % 4}", 0,
                               OK if rnd.random() > 0.05 else OVERLOADED, False))
    run = Run(records=recs, duration_s=60.0, users=[(0.0, 10)], request_name={f"m-v{i}": "m" for i in range(4)})
    out = L.write_locust_csv(run, tmp_path / "p")
    agg = L.read_stats(out["stats"])[-1]
    last = [r for r in L.read_stats_history(out["stats_history"]) if r["Name"] == "Aggregated"][-1]
    for col in ("Request Count", "Failure Count", "Median Response Time", "Min Response Time", "Max Response Time"):
        assert agg[col] == last["Total " + col], col
    assert agg["Average Response Time"] == pytest.approx(last["Total Average Response Time"], rel=1e-12)
