"""CloudWatch metrics of a live endpoint, read with GetMetricData into the same Datapoints a
prediction or the emulator produces (mmesim.results.cloudwatch), so one CSV format and one
``series_of`` serve all three.

SageMaker publishes the invocation and model metrics under ``AWS/SageMaker`` and the
instance metrics (GPU/CPU) under ``/aws/sagemaker/Endpoints``, both with the dimensions
EndpointName and VariantName.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable

from mmesim.results.cloudwatch import METRICS, PERIOD_S, Datapoint

INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
INVOCATION_NAMESPACE = "AWS/SageMaker"
INSTANCE_METRICS = frozenset({"GPUMemoryUtilization", "GPUUtilization", "CPUUtilization"})


def namespace(metric: str) -> str:
    return INSTANCE_NAMESPACE if metric in INSTANCE_METRICS else INVOCATION_NAMESPACE


def queries(endpoint: str, variant: str = "AllTraffic", period_s: int = PERIOD_S) -> list[dict]:
    """One GetMetricData query per (metric, statistic) of METRICS."""
    dims = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    out = []
    for metric, (_, _, stats) in METRICS.items():
        for stat in stats:
            out.append({"Id": f"q{len(out)}", "Label": f"{metric} {stat}", "ReturnData": True, "MetricStat": {
                "Metric": {"Namespace": namespace(metric), "MetricName": metric, "Dimensions": dims},
                "Period": int(period_s), "Stat": stat}})
    return out


def read_metrics(cloudwatch, endpoint: str, start: dt.datetime, end: dt.datetime, *, variant: str = "AllTraffic",
                 period_s: int = PERIOD_S) -> list[Datapoint]:
    """Every METRICS statistic CloudWatch has for the endpoint between ``start`` and ``end``
    (a boto3 ``cloudwatch`` client). ``period_start_s`` counts from ``start`` rounded down to
    the period, as CloudWatch aligns its periods."""
    qs = queries(endpoint, variant, period_s)
    by_id = {q["Id"]: q["MetricStat"] for q in qs}
    origin = dt.datetime.fromtimestamp(math.floor(start.timestamp() / period_s) * period_s, dt.timezone.utc)
    points: list[Datapoint] = []
    for i in range(0, len(qs), 500):                       # GetMetricData takes 500 queries a call
        token = None
        while True:
            kw = {"NextToken": token} if token else {}
            out = cloudwatch.get_metric_data(MetricDataQueries=qs[i:i + 500], StartTime=origin, EndTime=end,
                                             ScanBy="TimestampAscending", **kw)
            points.extend(_points(out["MetricDataResults"], by_id, origin))
            token = out.get("NextToken")
            if not token:
                break
    order = {m: k for k, m in enumerate(METRICS)}
    return sorted(points, key=lambda d: (order[d.metric], d.period_start_s, METRICS[d.metric][2].index(d.statistic)))


def _points(results: Iterable[dict], by_id: dict, origin: dt.datetime) -> list[Datapoint]:
    out = []
    for r in results:
        stat = by_id[r["Id"]]
        metric = stat["Metric"]["MetricName"]
        for ts, value in zip(r.get("Timestamps", []), r.get("Values", [])):
            out.append(Datapoint(metric, (ts - origin).total_seconds(), stat["Stat"], float(value),
                                 METRICS[metric][1]))
    return out
