"""The SimPy model of a multi-model endpoint: instance (memory tiers, LRU, load/unload),
triton (queue, dynamic batcher, execution instances), gpu (sharing), client (the load
generator) and mme (routing and the request path)."""

from mmesim.sim.mme import Simulation, max_models_loaded, simulate

__all__ = ["Simulation", "max_models_loaded", "simulate"]
