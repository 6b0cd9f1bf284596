"""Per-GPU temporal features: rolling windows over each GPU's last samples, keyed by GPU uuid.

A per-sample score cannot see what varies over minutes: a miner that runs in duty cycles, a DAG
that stays resident while utilisation drops, clocks and power held dead flat by a locked miner.
:class:`TemporalState` keeps, per GPU uuid, the last ``window - 1`` samples of a few scale-free
series and some running values (the GPU's highest power, lowest memory clock, a slow average of
its utilisation), and turns each new (n, 18) block of Morpheus's raw features into (n, K)
temporal features. The same object serves batch scoring (``training.abp_pipeline``), training
(``secml.abp.model.build_dataset`` feeds each GPU's rows in time order) and online scoring
(``secml.abp.serve.AbpScorer`` keeps one for the life of the Triton model), so a GPU's
history is read the same way everywhere.

Rows are taken in the order given: each GPU's rows must arrive in time order (nvidia-smi logs,
the generators and Morpheus's files are). Rows with no uuid are scored with no history (a
window of one sample). Everything is vectorised per GPU within a block (cumulative sums for
means, variances and fractions; a sliding view for minima and maxima), numpy and scipy only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from secml.abp.features import FEATURE_SUFFIXES, N_FEATURES
from secml.abp.latch import AllocationLatch

DEFAULT_WINDOW = 20
TEMPORAL_PREFIX = "temporal."
_F = {s: j for j, s in enumerate(FEATURE_SUFFIXES)}

# Base series per sample (scale-free where the 18 columns allow it).
_UTIL, _MEMUTIL, _POWER, _SM, _MEMCLK, _FB = range(6)
_K = 6
_EMA_ALPHA = 0.02  # slow utilisation average: ~50 samples of memory
_CAP = 0.97  # "at the power cap": within 3% of the highest draw this GPU has shown

TEMPORAL_NAMES: tuple[str, ...] = (
    "util_mean",  # share of time busy over the window
    "util_std",  # duty cycles and bursty work vary; mining and HPC are flat
    "util_min",
    "util_max",
    "util_busy_frac",  # samples at >= 90% utilisation
    "util_crossings",  # crossings of 50% per sample: duty-cycle periodicity
    "util_ema",  # slow average: a GPU that was busy until a moment ago
    "memutil_mean",
    "memutil_std",
    "power_cv",  # std / mean of power draw: locked miners draw flat power
    "power_of_gpu_max",  # draw against the highest this GPU has shown
    "power_at_cap_frac",  # share of the window within 3% of that highest draw
    "sm_clock_std",  # of the clock as a share of max: locked clocks do not move
    "mem_clock_std",
    "mem_clock_of_gpu_min",  # memory clock against the lowest this GPU has shown (idle)
    "fb_mean",
    "fb_std",  # a resident DAG does not move
    "fb_min",  # memory held through the window ...
    "fb_held_util_drop",  # ... while utilisation dropped: fb_min * (util_max - util_min) / 100
)
TEMPORAL: tuple[str, ...] = tuple(TEMPORAL_PREFIX + n for n in TEMPORAL_NAMES)
N_TEMPORAL = len(TEMPORAL)


def base_series(X: np.ndarray) -> np.ndarray:
    """The (n, 6) float64 series the windows run over, from the (n, 18) raw features."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise ValueError(f"expected an (n, {N_FEATURES}) feature matrix, got shape {X.shape}")

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        out = np.full(num.shape, np.nan)
        ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
        np.divide(num, den, out=out, where=ok)
        return out

    c = lambda s: X[:, _F[s]]  # noqa: E731
    out = np.empty((len(X), _K))
    out[:, _UTIL] = c("utilization.gpu_util")
    out[:, _MEMUTIL] = c("utilization.memory_util")
    out[:, _POWER] = c("power_readings.power_draw")
    out[:, _SM] = ratio(c("clocks.sm_clock"), c("max_clocks.sm_clock"))
    out[:, _MEMCLK] = ratio(c("clocks.mem_clock"), c("max_clocks.mem_clock"))
    used = c("fb_memory_usage.used")
    out[:, _FB] = ratio(used, used + c("fb_memory_usage.free"))
    return out


@dataclass
class _Gpu:
    """What is kept between blocks for one GPU."""

    tail: np.ndarray  # (<= window - 1, 6) last filled samples
    tail_cap: np.ndarray  # (<= window - 1,) whether each was at the power cap when seen
    tail_cross: np.ndarray  # (<= window - 1,) whether each crossed 50% utilisation
    seen: np.ndarray  # (6,) bool: the series has had a reading
    ema: float
    power_max: float
    memclk_min: float


class TemporalState:
    """Rolling per-GPU history; :meth:`features` turns raw blocks into temporal features."""

    def __init__(self, window: int = DEFAULT_WINDOW, max_gpus: int = 100_000) -> None:
        """Keep the last ``window - 1`` samples of up to ``max_gpus`` GPUs (least recent out)."""
        if window < 2:
            raise ValueError(f"window must be >= 2 samples, got {window}")
        self.window = window
        self.max_gpus = max_gpus
        # the allocation latch applied to the model's scores (secml.abp.latch) lives here too, so
        # whoever carries a GPU's windows carries its allocation episode
        self.latch = AllocationLatch(max_gpus)
        self._gpus: OrderedDict[str, _Gpu] = OrderedDict()

    def __len__(self) -> int:
        """GPUs with history."""
        return len(self._gpus)

    def __contains__(self, uuid: object) -> bool:
        """True when ``uuid`` has history."""
        return uuid in self._gpus

    def reset(self) -> None:
        """Forget every GPU."""
        self._gpus.clear()
        self.latch.reset()

    def features(self, X: np.ndarray, uuids: Sequence[str | None] | None = None) -> np.ndarray:
        """The (n, K) float32 temporal features of raw rows ``X``, updating each GPU's history.

        ``uuids[i]`` names row i's GPU; None (or no ``uuids``) means no history for that row.
        """
        base = base_series(X)
        n = len(base)
        out = np.empty((n, N_TEMPORAL), dtype=np.float32)
        if n == 0:
            return out
        if uuids is None:
            uuids = [None] * n
        if len(uuids) != n:
            raise ValueError(f"{len(uuids)} uuids for {n} rows")
        first = uuids[0]
        groups: dict[str | None, list[int]] = {}
        if first is not None and all(u == first for u in uuids):
            groups[str(first)] = list(range(n))  # one GPU: the common case for a block
        else:
            for i, u in enumerate(uuids):
                groups.setdefault(None if u is None else str(u), []).append(i)
        for uuid, idx in groups.items():
            if uuid is None:
                out[idx] = _alone(base[idx])  # no history: each row alone
                continue
            rows = base[idx] if len(idx) != n else base
            res = self._run(uuid, rows)
            if len(idx) == n:
                out[:] = res
            else:
                out[idx] = res
        return out

    def _run(self, uuid: str | None, new: np.ndarray) -> np.ndarray:
        """Temporal features of one GPU's new rows (in time order); update its history."""
        w = self.window
        prev = self._gpus.get(uuid) if uuid is not None else None
        if prev is not None:
            self._gpus.move_to_end(uuid)  # type: ignore[arg-type]
            h = len(prev.tail)
            seq = np.concatenate([prev.tail, new])
            seen = prev.seen
        else:
            h = 0
            seq = new.copy()
            seen = np.zeros(_K, dtype=bool)
        m = len(new)
        total = len(seq)
        # Fill gaps (N/A readings) forward from the last reading; leading gaps back from the
        # first; a series with no reading at all stays NaN.
        nan = np.isnan(seq)
        if nan.any():
            idx = np.where(~nan, np.arange(total)[:, None], 0)
            np.maximum.accumulate(idx, axis=0, out=idx)
            filled = seq[idx, np.arange(_K)]
            first = np.argmax(~nan, axis=0)
            lead = np.arange(total)[:, None] < first[None, :]
            filled = np.where(lead, seq[first, np.arange(_K)][None, :], filled)
            seq = filled
        seen = seen | ~np.isnan(seq).all(axis=0)
        # Cumulative sums give every window's mean, variance and fractions in O(n).
        count = np.minimum(np.arange(h, total) + 1, w).astype(np.float64)[:, None]

        def wsum(v: np.ndarray) -> np.ndarray:
            cs = np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
            hi = np.arange(h, total) + 1
            lo = np.maximum(hi - w, 0)
            return cs[hi] - cs[lo]

        s1 = wsum(seq)
        s2 = wsum(seq * seq)
        mean = s1 / count
        var = s2 / count - mean * mean
        # a flat window is exactly 0 however the sums were split between blocks (cancellation
        # leaves ~1e-12 that a tree split could otherwise read differently)
        var[var <= 1e-9 * np.maximum(mean * mean, 1.0)] = 0.0
        std = np.sqrt(var)
        # minima/maxima over a sliding view, front-padded with the first sample (exact: it is
        # in every padded window)
        pad = np.concatenate([np.repeat(seq[:1], w - 1, axis=0), seq])
        view = np.lib.stride_tricks.sliding_window_view(pad[h:], w, axis=0)  # (m, 6, w)
        util_min = view[:, _UTIL].min(axis=1)
        util_max = view[:, _UTIL].max(axis=1)
        fb_min = view[:, _FB].min(axis=1)
        util = seq[:, _UTIL]
        busy = wsum((util >= 90).astype(np.float64)) / count[:, 0]
        above = util >= 50
        cross = np.zeros(total)
        cross[1:] = above[1:] != above[:-1]
        if prev is not None and h:
            cross[:h] = prev.tail_cross
        crossings = wsum(cross) / count[:, 0]
        # running per-GPU values
        p = seq[:, _POWER]
        pmax0 = prev.power_max if prev is not None else -np.inf
        pmax = np.maximum.accumulate(np.concatenate([[pmax0], p[h:]]))[1:]
        mc = seq[:, _MEMCLK]
        mcmin0 = prev.memclk_min if prev is not None else np.inf
        mcmin = np.minimum.accumulate(np.concatenate([[mcmin0], mc[h:]]))[1:]
        at_cap = np.zeros(total)
        at_cap[h:] = p[h:] >= _CAP * pmax
        if prev is not None and h:
            at_cap[:h] = prev.tail_cap  # as judged when those samples arrived
        cap_frac = wsum(at_cap) / count[:, 0]
        ema0 = prev.ema if prev is not None else (util[h] if np.isfinite(util[h]) else 0.0)
        u = np.nan_to_num(util[h:], nan=ema0)
        a = _EMA_ALPHA
        from scipy.signal import lfilter  # here: the Triton stub need not load scipy idle

        ema, _ = lfilter([a], [1.0, a - 1.0], u, zi=[(1 - a) * ema0])

        out = np.empty((m, N_TEMPORAL))
        um, us = mean[:, _UTIL], std[:, _UTIL]
        pm, ps = mean[:, _POWER], std[:, _POWER]
        cols = (
            um,
            us,
            util_min,
            util_max,
            busy,
            crossings,
            ema,
            mean[:, _MEMUTIL],
            std[:, _MEMUTIL],
            np.divide(ps, pm, out=np.full(m, np.nan), where=pm > 0),
            np.divide(p[h:], pmax, out=np.full(m, np.nan), where=pmax > 0),
            cap_frac,
            std[:, _SM],
            std[:, _MEMCLK],
            np.divide(mc[h:], mcmin, out=np.full(m, np.nan), where=mcmin > 0),
            mean[:, _FB],
            std[:, _FB],
            fb_min,
            fb_min * (util_max - util_min) / 100.0,
        )
        for j, col in enumerate(cols):
            out[:, j] = col
        # series never read (GeForce power N/A...) give NaN, which XGBoost treats as missing
        if not seen.all():
            for j, dep in _DEPENDS.items():
                if not all(seen[d] for d in dep):
                    out[:, j] = np.nan
        if uuid is not None:
            last_ok = np.isfinite(pmax[-1])
            self._gpus[uuid] = _Gpu(
                tail=seq[-(w - 1) :].copy(),
                tail_cap=at_cap[-(w - 1) :].copy(),
                tail_cross=cross[-(w - 1) :].copy(),
                seen=seen,
                ema=float(ema[-1]),
                power_max=float(pmax[-1]) if last_ok else -np.inf,
                memclk_min=float(mcmin[-1]) if np.isfinite(mcmin[-1]) else np.inf,
            )
            if len(self._gpus) > self.max_gpus:
                self._gpus.popitem(last=False)
        return out


def _alone(base: np.ndarray) -> np.ndarray:
    """Temporal features of rows with no history (a window of one sample each)."""
    m = len(base)
    u, p, mc, fb = base[:, _UTIL], base[:, _POWER], base[:, _MEMCLK], base[:, _FB]
    zero, one = np.zeros(m), np.ones(m)
    pos = lambda v: np.where(v > 0, one, np.nan)  # noqa: E731  v / v, NaN where unreadable
    cols = (u, zero, u, u, (u >= 90) * 1.0, zero, u, base[:, _MEMUTIL], zero, zero * pos(p),
            pos(p), pos(p), zero, zero, pos(mc), fb, zero, fb, zero)  # fmt: skip
    out = np.column_stack(cols).astype(np.float32)
    for j, dep in _DEPENDS.items():
        bad = np.isnan(base[:, list(dep)]).any(axis=1)
        out[bad, j] = np.nan
    return out


_SERIES_OF = {
    "util": _UTIL,
    "memutil": _MEMUTIL,
    "power": _POWER,
    "sm_clock": _SM,
    "mem_clock": _MEMCLK,
    "fb": _FB,
}
# feature index -> the base series it needs
_DEPENDS: dict[int, tuple[int, ...]] = {
    j: tuple(s for k, s in _SERIES_OF.items() if name.startswith(k))
    + ((_UTIL,) if name == "fb_held_util_drop" else ())
    for j, name in enumerate(TEMPORAL_NAMES)
}


def temporal_features(
    X: np.ndarray,
    uuids: Sequence[str | None] | None = None,
    state: TemporalState | None = None,
) -> np.ndarray:
    """Temporal features of ``X`` over ``state`` (a fresh one when None: history = this call)."""
    return (state if state is not None else TemporalState()).features(X, uuids)
