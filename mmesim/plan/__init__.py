"""Capacity planning and what-if: `mmesim plan` (search.py; the MME against one endpoint per
model and inference components: hosting.py), `mmesim sweep` (sweep.py), the
parallel runner (local processes or a Dask cluster: parallel.py) and endpoints too big for
one process (partition.py). Sits above the simulator and calls it; decides nothing of its own
about routing, memory or eviction."""

from mmesim.plan.mix import PlanMix, load_mix
from mmesim.plan.search import Plan, plan

__all__ = ["Plan", "PlanMix", "load_mix", "plan"]
