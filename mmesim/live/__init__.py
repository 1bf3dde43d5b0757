"""Live mode: deploy a real SageMaker multi-model endpoint with Triton, load-test it, read its
CloudWatch metrics, and delete everything it created, also when interrupted.

A state file records each resource as it is created, so a crashed run can be torn down later
(``mmesim live teardown --state FILE``). Nothing starts without an explicit spend confirmation.
"""

from mmesim.live.deployment import (Deployment, LiveError, LivePlan, SpendNotConfirmed, deploy, estimate_cost,
                                    teardown, wait_in_service)
from mmesim.live.images import TRITON_IMAGE_ACCOUNTS, triton_image_uri
from mmesim.live.metrics import read_metrics
from mmesim.live.run import LiveResult, loadtest, metrics, run_live

__all__ = ["Deployment", "LiveError", "LivePlan", "SpendNotConfirmed", "TRITON_IMAGE_ACCOUNTS", "deploy",
           "estimate_cost", "LiveResult", "loadtest", "metrics", "read_metrics", "run_live", "teardown", "triton_image_uri", "wait_in_service"]
