"""mmesim: predict what a GPU multi-model endpoint will do before you pay for one.

calibrate (real Triton) -> ModelProfile -> simulate (SimPy) -> Summary, and the same
Summary from a measured load test, so the two are comparable by construction.
"""

__version__ = "0.1.0"

from mmesim.errors import ConfigError, MmesimError  # noqa: E402,F401
