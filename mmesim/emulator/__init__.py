"""A SageMaker multi-model endpoint on this machine (``mmesim emulate``): the Runtime API
front, the platform (artifact store, memory budget, LRU unloading, routing), a backend
(a real Triton, or a virtual GPU driven by profiles), and the control plane."""
