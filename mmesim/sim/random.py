"""Random streams for the simulator: one seeded numpy Generator per purpose, drawn in blocks.

Drawing numbers one at a time from numpy costs microseconds each; the simulator needs
several per request, so each stream pre-draws a block and hands out floats."""

from __future__ import annotations

import numbers

import numpy as np

from mmesim.errors import ConfigError


MAX_SHAPES = 64


class Stream:
    __slots__ = ("_rng", "_buf", "_i", "_block", "_gammas")

    def __init__(self, rng: np.random.Generator, block: int = 8192):
        self._rng, self._block = rng, block
        self._buf: list[float] = []
        self._i = 0
        self._gammas: dict[float, list[float]] = {}   # shape -> pre-drawn standard gamma variates

    def random(self) -> float:
        """Uniform on [0, 1)."""
        i = self._i
        if i >= len(self._buf):
            self._buf = self._rng.random(self._block).tolist()
            i = 0
        self._i = i + 1
        return self._buf[i]

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def exponential(self, mean: float) -> float:
        return float(-mean * np.log1p(-self.random()))    # a float: a numpy scalar would slow every later sum

    def gamma(self, mean: float, cv: float) -> float:
        """Mean ``mean``, coefficient of variation ``cv`` (0: exactly the mean). Each spread
        keeps a block of variates, so callers should use a few spreads, not a continuum: past
        MAX_SHAPES of them, a new one's block is small (a simulation of 23 GB once came of
        one spread per idle time)."""
        if cv <= 0:
            return mean
        k = 1.0 / (cv * cv)
        buf = self._gammas.get(k)
        if not buf:
            block = self._block if len(self._gammas) < MAX_SHAPES else 16
            buf = self._gammas[k] = self._rng.standard_gamma(k, block).tolist()
        return buf.pop() * mean / k


def check_seed(seed) -> None:
    """numpy's SeedSequence takes whole numbers >= 0 only."""
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError("a seed is a whole number >= 0", field="--seed", value=seed)


def streams(seed: int, names: tuple[str, ...]) -> dict[str, Stream]:
    """Independent streams: adding a consumer of one never shifts the others."""
    check_seed(seed)
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: Stream(np.random.default_rng(child)) for name, child in zip(names, children)}
