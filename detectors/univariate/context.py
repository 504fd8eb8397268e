"""``context``: a contextual sequence learner over quantised values (after CAD OSE), with a rest period."""
from __future__ import annotations

import numpy as np

from detectors.base import register
from detectors.errors import InvalidInput
from detectors.univariate._novelty import FloatArray, IntArray, NoveltyDetector, quantise, quantise_one


def count_before(codes: IntArray, table: IntArray) -> IntArray:
    """For each position t: how often ``codes[t]`` occurred before t (``table`` holds earlier counts)."""
    n = len(codes)
    # a stable sort groups equal codes in stream order; codes below 2^16 sort by radix (linear time)
    keys = codes.astype(np.uint16) if len(table) <= 65536 else codes
    order = np.argsort(keys, kind="stable")
    sc = keys[order]
    idx = np.arange(n, dtype=np.int64)
    first = np.empty(n, dtype=bool)
    if n:
        first[0] = True
        np.not_equal(sc[1:], sc[:-1], out=first[1:])
    group_start = np.maximum.accumulate(np.where(first, idx, 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = idx - group_start
    return out + table[codes]


@register
class ContextNovelty(NoveltyDetector):
    """How new the current transition is, given the values just before it; NAB's best single learner here.

    The method follows Smirnov's Contextual Anomaly Detector (CAD OSE, in NAB): values are quantised into
    ``bins`` levels of the series' range, and the learner remembers which level followed which context.
    Here a context of order k is the last k levels (k = 1 .. ``max_order``), and the memory is a table of
    counts per (context, next level): bounded, ``(bins + 1)^k * bins`` entries per order. A point's raw
    novelty is the mean over the orders of ``c / (c + support)`` when its level never followed its
    context before (``c`` = how often the context itself was seen; a context seen often whose
    continuation is new is more surprising than a rare one), and 0 when it did. After a raw novelty of
    ``mask_level`` or more, the next ``rest`` points report 0 (CAD OSE's rest period: a fifth of the
    probationary period under NAB's protocol). Scores are calibrated so ``mask_level`` is the alarm
    level 0.99. The value range is NAB's (``value_min``/``value_max``) or learned online.

    >>> d = ContextNovelty()
    >>> for t in range(600):
    ...     _ = d.update(float(t % 10), t)
    >>> d.update(55.0) >= d.alarm_threshold
    True
    """

    name = "context"
    state_keys = (*NoveltyDetector._base_keys, "_hist", "_counts")

    def __init__(self, bins: int = 8, max_order: int = 3, support: float = 0.5,
                 value_min: float | None = None, value_max: float | None = None,
                 probation: int | None = None, warmup: int = 150, margin: float = 0.25,
                 mask_level: float = 0.75, rest_fraction: float = 0.2) -> None:
        if not 2 <= bins <= 64:
            raise InvalidInput(f"bins must be in [2, 64], got {bins}")
        if not 1 <= max_order <= 4:
            raise InvalidInput(f"max_order must be in [1, 4], got {max_order}")
        if support <= 0:
            raise InvalidInput(f"support must be > 0, got {support}")
        self.bins = int(bins)
        self.max_order = int(max_order)
        self.support = float(support)
        if sum((bins + 1) ** k * (bins + 1) for k in range(1, max_order + 1)) > 4_000_000:
            raise InvalidInput(f"bins={bins} with max_order={max_order} needs a count table over 4M entries")
        super().__init__(value_min, value_max, probation, warmup, margin, mask_level, rest_fraction)

    def _reset_model(self) -> None:
        # the last max_order levels, newest first; `bins` marks "no point yet"
        self._hist = [self.bins] * self.max_order
        # one flat table: order k's (context, level) counts, then its context counts, for k = 1..max_order
        self._offsets = self._layout()
        # a list, not an array: the streaming path reads and bumps six entries per point, and list
        # indexing is several times faster than numpy scalar indexing
        self._counts: list[int] = [0] * self._offsets[-1]

    def _layout(self) -> list[int]:
        offs = [0]
        b1 = self.bins + 1
        for k in range(1, self.max_order + 1):
            n_ctx = b1 ** k
            offs.append(offs[-1] + n_ctx * self.bins)    # pair counts
            offs.append(offs[-1] + n_ctx)                # context counts
        return offs

    def _raw_one(self, x: float, lo: float, hi: float) -> float:
        q = quantise_one(x, lo, hi, self.bins)
        counts, offs, hist = self._counts, self._offsets, self._hist
        b1, total, ctx = self.bins + 1, 0.0, 0
        for k in range(1, self.max_order + 1):
            ctx = ctx * b1 + hist[k - 1]
            pair_i = offs[2 * k - 2] + ctx * self.bins + q
            ctx_i = offs[2 * k - 1] + ctx
            cc = counts[ctx_i]
            if counts[pair_i] == 0:
                total += cc / (cc + self.support)
            counts[pair_i] += 1
            counts[ctx_i] += 1
        hist.insert(0, q)
        hist.pop()
        return total / self.max_order

    def _raw_many(self, x: FloatArray, lo: FloatArray, hi: FloatArray) -> FloatArray:
        q = quantise(x, lo, hi, self.bins)
        n = len(q)
        b1, offs = self.bins + 1, self._offsets
        # history of levels: the stored last max_order levels, then this batch
        full = np.concatenate([np.asarray(self._hist[::-1], dtype=np.int64), q])
        m = self.max_order
        table = np.asarray(self._counts, dtype=np.int64)
        total = np.zeros(n)
        ctx = np.zeros(n, dtype=np.int64)
        for k in range(1, m + 1):
            ctx = ctx * b1 + full[m - k: m - k + n]
            pair = offs[2 * k - 2] + ctx * self.bins + q
            cidx = offs[2 * k - 1] + ctx
            cp = count_before(pair, table)
            cc = count_before(cidx, table)
            total += np.where(cp == 0, cc / (cc + self.support), 0.0)
            table += np.bincount(pair, minlength=len(table))
            table += np.bincount(cidx, minlength=len(table))
        self._counts = table.tolist()
        self._hist = [int(v) for v in full[::-1][:m]]
        return total / m
