"""The per-GPU allocation latch (secml.abp.latch): pauses carry their episode's score."""

from __future__ import annotations

import numpy as np
import pytest

from secml.abp import latch as lt
from secml.abp.features import FEATURE_SUFFIXES, N_FEATURES
from secml.abp.temporal import TemporalState

USED = FEATURE_SUFFIXES.index("fb_memory_usage.used")
FREE = FEATURE_SUFFIXES.index("fb_memory_usage.free")
UTIL = FEATURE_SUFFIXES.index("utilization.gpu_util")


def rows(util: list[float], used: list[float], total: float = 24576.0) -> np.ndarray:
    X = np.full((len(util), N_FEATURES), np.nan)
    X[:, UTIL] = util
    X[:, USED] = used
    X[:, FREE] = total - np.asarray(used)
    return X


def test_a_pause_with_the_allocation_resident_scores_like_the_work_before_it() -> None:
    # a duty-cycled miner: 5 busy samples scored high, then 5 idle ones with the DAG resident
    X = rows([100] * 5 + [0] * 5, [5000] * 10)
    s = np.array([0.9] * 5 + [0.01] * 5, dtype=np.float32)
    out = lt.AllocationLatch().apply(X, s, ["gpu-a"] * 10)
    np.testing.assert_allclose(out[:5], 0.9, rtol=1e-6)
    np.testing.assert_allclose(out[5:], 0.9, rtol=1e-6)


def test_memory_held_without_busy_history_keeps_its_own_score() -> None:
    X = rows([0] * 6, [12000] * 6)
    s = np.full(6, 0.02, dtype=np.float32)
    np.testing.assert_array_equal(lt.AllocationLatch().apply(X, s, ["gpu-a"] * 6), s)


def test_too_few_busy_samples_do_not_latch() -> None:
    X = rows([100] * (lt.MIN_BUSY - 1) + [0] * 3, [5000] * (lt.MIN_BUSY + 2))
    s = np.array([0.9] * (lt.MIN_BUSY - 1) + [0.01] * 3, dtype=np.float32)
    out = lt.AllocationLatch().apply(X, s, ["g"] * len(s))
    np.testing.assert_allclose(out[-3:], 0.01, rtol=1e-6)


def test_a_new_allocation_starts_a_new_episode() -> None:
    # the miner exits (memory drops to a notebook's 900 MiB): the idle samples are its own
    X = rows([100] * 5 + [0] * 4, [5000] * 5 + [900] * 4)
    s = np.array([0.9] * 5 + [0.01] * 4, dtype=np.float32)
    out = lt.AllocationLatch().apply(X, s, ["g"] * 9)
    np.testing.assert_allclose(out[5:], 0.01, rtol=1e-6)
    # noise within the tolerance is the same allocation
    X2 = rows([100] * 5 + [0] * 4, [5000, 5003, 4998, 5001, 5000, 5010, 4990, 5002, 5000])
    out2 = lt.AllocationLatch().apply(X2, s, ["g"] * 9)
    np.testing.assert_allclose(out2[5:], 0.9, rtol=1e-6)


def test_a_job_landing_near_the_last_ones_memory_is_a_new_episode() -> None:
    # the miner held 5310 MiB of 24 GiB; the next job holds 5360 (beyond 32 MiB / 0.1%)
    X = rows([100] * 5 + [0] * 4, [5310] * 5 + [5360] * 4)
    s = np.array([0.9] * 5 + [0.01] * 4, dtype=np.float32)
    out = lt.AllocationLatch().apply(X, s, ["g"] * 9)
    np.testing.assert_allclose(out[5:], 0.01, rtol=1e-6)


def test_pauses_latch_only_while_a_real_allocation_is_held() -> None:
    # a few hundred MiB is what an idle board holds: its idle samples keep their own score
    small = rows([100] * 5 + [0] * 4, [400] * 9)
    s = np.array([0.9] * 5 + [0.01] * 4, dtype=np.float32)
    out = lt.AllocationLatch().apply(small, s, ["g"] * 9)
    np.testing.assert_allclose(out[5:], 0.01, rtol=1e-6)
    held = rows([100] * 5 + [0] * 4, [lt.HELD_MIB + 100] * 9)
    out = lt.AllocationLatch().apply(held, s, ["g"] * 9)
    np.testing.assert_allclose(out[5:], 0.9, rtol=1e-6)


def test_one_benign_spike_does_not_carry_a_busy_episode() -> None:
    # a training job: one sample scores high; the running average stays near the job's level
    s = np.array([0.02] * 10 + [0.95] + [0.02] * 10 + [0.02] * 5, dtype=np.float32)
    X = rows([95] * 21 + [0] * 5, [15000] * 26)
    out = lt.AllocationLatch().apply(X, s, ["g"] * len(s))
    assert out[10] == pytest.approx(0.95)  # the spike itself is still its own score
    assert out[-5:].max() < 0.1  # the pause after it is not an alert


def test_gpus_are_kept_apart_and_rows_without_uuid_untouched() -> None:
    X = rows([100, 100, 100, 0, 0, 0], [5000, 5000, 5000, 5000, 5000, 5000])
    s = np.array([0.9, 0.9, 0.9, 0.01, 0.01, 0.01], dtype=np.float32)
    out = lt.AllocationLatch().apply(X, s, ["a", "a", "a", "b", None, "a"])
    assert out[3] == pytest.approx(0.01)  # GPU b has no busy history
    assert out[4] == pytest.approx(0.01)  # no uuid: no history
    assert out[5] == pytest.approx(0.9)  # GPU a's pause


def test_blocks_fed_in_turn_equal_one_block() -> None:
    rng = np.random.default_rng(3)
    n = 200
    util = np.where(rng.random(n) < 0.5, 100.0, 0.0)
    used = np.repeat([5000.0, 9000.0], n // 2)
    X = rows(util.tolist(), used.tolist())
    s = rng.random(n).astype(np.float32)
    uuids = [["a", "b"][i % 2] for i in range(n)]
    whole = lt.AllocationLatch().apply(X, s, uuids)
    state = lt.AllocationLatch()
    parts = [state.apply(X[i : i + 37], s[i : i + 37], uuids[i : i + 37]) for i in range(0, n, 37)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_the_temporal_state_carries_a_latch_and_forgets_it_on_reset() -> None:
    st = TemporalState()
    X = rows([100] * 4, [5000] * 4)
    st.latch.apply(X, np.full(4, 0.9, dtype=np.float32), ["g"] * 4)
    assert len(st.latch) == 1
    st.reset()
    assert len(st.latch) == 0


def test_uuid_count_must_match() -> None:
    with pytest.raises(ValueError, match="uuids"):
        lt.AllocationLatch().apply(rows([1, 2], [1, 2]), np.zeros(2), ["a"])


def test_a_latched_booster_scores_pauses_through_the_state(fleet) -> None:
    """Through ``model.score``: a calibrated booster carries ``latch`` and uses the state."""
    from secml.abp import model as m

    assert m.booster_latch(fleet.booster)
    ds = fleet.ds
    duty = (ds.profile == "mining_duty_cycled") & (ds.X[:, UTIL] < lt.BUSY_UTIL)
    g = ds.gpu[np.flatnonzero(duty)[0]]  # a board that reports utilisation (not MIG)
    idx = np.flatnonzero(ds.gpu == g)
    idx = idx[np.argsort(ds.time[idx], kind="stable")]
    X = ds.X[idx]
    uuids = [str(g)] * len(idx)
    latched = m.score(fleet.booster, X, uuids)
    alone = m.score(fleet.booster, X)  # no uuids: no history, per-sample scores
    paused = (ds.profile[idx] == "mining_duty_cycled") & (X[:, UTIL] < lt.BUSY_UTIL)
    assert paused.any()
    assert latched[paused].mean() > alone[paused].mean() + 0.3


def test_the_booster_learns_only_from_mining_rows_that_show_their_work(fleet) -> None:
    from secml.abp import model as m

    ds = fleet.ds
    kept = m.per_sample_evidence(ds)
    util = ds.X[:, UTIL]
    idle_mining = (ds.y == 1) & (util < lt.BUSY_UTIL)
    assert idle_mining.any()
    kutil = kept.X[:, UTIL]
    assert not ((kept.y == 1) & (kutil < lt.BUSY_UTIL)).any()
    # every benign row stays, idle ones and MIG ones (utilisation N/A) included
    assert (kept.y == 0).sum() == (ds.y == 0).sum()
    # MIG rows (utilisation N/A): a miner's rows drawing under 30% of that GPU's top draw go
    power = ds.X[:, m.FEATURES.index(m.PREFIX + "power_readings.power_draw")]
    na = np.isnan(util)
    top = {g: np.nanmax(power[ds.gpu == g]) for g in np.unique(ds.gpu[na])}
    low = np.array([na[i] and power[i] < 0.3 * top[ds.gpu[i]] for i in range(len(ds))])
    assert len(kept) == len(ds) - int((idle_mining | ((ds.y == 1) & low)).sum())
