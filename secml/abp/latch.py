"""Per-GPU allocation latch: a miner's pauses score like its work while its memory stays resident.

A per-sample score cannot tell a duty-cycled miner's pause (utilisation 0, the DAG still in
memory) from a stopped notebook holding memory: the two samples are identical. What tells them
apart is what the same allocation did a moment ago. The latch keeps, per GPU uuid, the frame
buffer in use when the current *allocation episode* began and a running average of the
per-sample scores of that episode's busy samples; an episode ends when the memory in use moves
by more than a tolerance (a process started, exited or grew).

The final score of a row is

- busy (utilisation >= ``busy_util`` %, or N/A as on MIG): ``max(s, ema)``, the episode's
  running average folded in (a steady miner whose samples hover near the threshold is held up
  by its own history; one benign spike does not move a benign episode's average);
- idle with the allocation still resident: the episode's average, once it has
  ``MIN_BUSY`` busy samples and holds at least ``HELD_MIB``, else ``s``.

Nothing here is fitted: the rule is fixed and the model's threshold is calibrated on the
latched scores (out of fold), so the target FPR holds for the final score. The state lives
beside the temporal windows (:class:`secml.abp.temporal.TemporalState` holds one), so batch,
stream and ``POST /predict`` read a GPU's history the same way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secml.abp.features import FEATURE_SUFFIXES

_USED = FEATURE_SUFFIXES.index("fb_memory_usage.used")
_FREE = FEATURE_SUFFIXES.index("fb_memory_usage.free")
_UTIL = FEATURE_SUFFIXES.index("utilization.gpu_util")

ALPHA = 0.2  # running average over roughly the last 5-10 busy samples
BUSY_UTIL = 10.0  # % utilisation that counts as work
MIN_BUSY = 3  # busy samples before the average speaks for the pauses
# Memory moves beyond TOL_MIB (or TOL_SHARE of the board) start a new episode: a resident
# allocation does not move, while a new process landing within 0.1% of the last one's memory
# is a coincidence (a wider 64 MiB / 0.5% tolerance carried a miner's score into the unrelated
# idle job that followed it on an independent fleet).
TOL_MIB = 32.0
TOL_SHARE = 0.001
# Pauses inherit the episode's score only while a real allocation is held (a DAG, a model);
# a few hundred MiB is what an idle board's driver and display hold.
HELD_MIB = 1024.0


@dataclass
class _Episode:
    fb: float  # MiB in use when the episode began (NaN: unknown)
    ema: float  # running average of busy samples' scores (NaN: none yet)
    busy: int  # busy samples seen in this episode


class AllocationLatch:
    """Per-GPU allocation episodes; :meth:`apply` turns per-sample scores into final ones."""

    def __init__(self, max_gpus: int = 100_000) -> None:
        """Keep the episodes of up to ``max_gpus`` GPUs (oldest episodes dropped)."""
        self.max_gpus = max_gpus
        self._gpus: OrderedDict[str, _Episode] = OrderedDict()

    def __len__(self) -> int:
        """GPUs with an open episode."""
        return len(self._gpus)

    def reset(self) -> None:
        """Forget every GPU."""
        self._gpus.clear()

    def apply(
        self, X: np.ndarray, scores: np.ndarray, uuids: Sequence[str | None] | None
    ) -> np.ndarray:
        """Final float32 scores of rows ``X`` (n, 18 raw features) scored ``scores``.

        Rows are taken in the order given (each GPU's rows in time order); rows with no uuid
        keep their own score.
        """
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        out = s.astype(np.float32)
        if uuids is None or len(s) == 0:
            return out
        if len(uuids) != len(s):
            raise ValueError(f"{len(uuids)} uuids for {len(s)} scores")
        X = np.asarray(X, dtype=np.float64)
        used = X[:, _USED]
        tol = np.maximum(TOL_MIB, TOL_SHARE * (used + X[:, _FREE]))
        tol = np.where(np.isnan(tol), TOL_MIB, tol).tolist()
        util = X[:, _UTIL]
        busy_row = (~(util < BUSY_UTIL)).tolist()  # busy, or N/A (MIG): the score speaks
        used = used.tolist()
        score = s.tolist()
        final = list(score)
        gpus = self._gpus
        nan = float("nan")
        for i, uuid in enumerate(uuids):
            if uuid is None:
                continue
            key = uuid if type(uuid) is str else str(uuid)
            ep = gpus.get(key)
            fb = used[i]
            # a new episode when memory in use moved beyond the tolerance (or reads N/A)
            if ep is None or not abs(fb - ep.fb) <= tol[i]:
                gpus.pop(key, None)  # re-inserted last: eviction drops the oldest episodes
                ep = gpus[key] = _Episode(fb, nan, 0)
            if busy_row[i]:
                x = score[i]
                ep.ema = x if ep.busy == 0 else ep.ema + ALPHA * (x - ep.ema)
                ep.busy += 1
                if ep.ema > x:
                    final[i] = ep.ema
            elif ep.busy >= MIN_BUSY and ep.fb >= HELD_MIB:
                final[i] = ep.ema
        while len(gpus) > self.max_gpus:
            gpus.popitem(last=False)
        return np.asarray(final, dtype=np.float32)
