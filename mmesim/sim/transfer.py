"""Bandwidths shared by transfers in progress: ``SharedRate``, processor sharing with a
per-transfer cap (``mmesim.sim.sharing``, the engine every shared resource uses)."""

from mmesim.sim.sharing import SharedRate

__all__ = ["SharedRate"]
