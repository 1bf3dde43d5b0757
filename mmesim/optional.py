"""Optional dependencies: imported when a feature needs them, or one line naming the extra."""

from __future__ import annotations

import importlib

from mmesim.errors import ConfigError


def require(module: str, extra: str, what: str):
    """``module`` imported, or a ConfigError saying ``what`` needs ``pip install 'mmesim[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{what} need {module}: pip install 'mmesim[{extra}]'") from None
