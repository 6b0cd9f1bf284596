"""Per-GPU temporal features, the calibrated threshold, and the independent fleet generator."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from secml.abp import independent as gen2
from secml.abp import model as m
from secml.abp.features import FEATURE_SUFFIXES, N_FEATURES, to_matrix
from secml.abp.temporal import TEMPORAL, TemporalState

UTIL = FEATURE_SUFFIXES.index("utilization.gpu_util")

J = {s: j for j, s in enumerate(FEATURE_SUFFIXES)}
COL = {n: j for j, n in enumerate(t.removeprefix("temporal.") for t in TEMPORAL)}


def _rows(util: list[float], used: float = 5000.0) -> np.ndarray:
    """Raw (n, 18) rows of one board with the given utilisation series."""
    X = np.zeros((len(util), N_FEATURES), dtype=np.float32)
    X[:, J["utilization.gpu_util"]] = util
    X[:, J["utilization.memory_util"]] = np.asarray(util) * 0.9
    X[:, J["fb_memory_usage.used"]] = used
    X[:, J["fb_memory_usage.free"]] = 10000 - used
    X[:, J["power_readings.power_draw"]] = 50 + np.asarray(util)
    X[:, J["clocks.sm_clock"]] = X[:, J["clocks.graphics_clock"]] = 1000
    X[:, J["max_clocks.sm_clock"]] = X[:, J["max_clocks.graphics_clock"]] = 2000
    X[:, J["clocks.mem_clock"]] = 5000
    X[:, J["max_clocks.mem_clock"]] = 6000
    return X


def test_block_boundaries_do_not_change_the_features(fleet) -> None:
    """Batch (whole file), stream (one record at a time) and odd blocks agree exactly."""
    recs = fleet.records[:900]
    X = to_matrix(recs)
    uuids = [r["nvidia_smi_log.gpu.uuid"] for r in recs]
    whole = TemporalState().features(X, uuids)
    for size in (1, 7, 64):
        st = TemporalState()
        parts = [st.features(X[i : i + size], uuids[i : i + size]) for i in range(0, len(X), size)]
        np.testing.assert_allclose(np.vstack(parts), whole, rtol=1e-5, atol=1e-6)


def test_history_is_kept_per_gpu_uuid() -> None:
    """Two GPUs interleaved read as each GPU alone; no uuid means no history."""
    a, b = _rows([100, 0] * 10), _rows([50] * 20, used=100)
    X = np.empty((40, N_FEATURES), dtype=np.float32)
    X[0::2], X[1::2] = a, b
    inter = TemporalState().features(X, ["A", "B"] * 20)
    np.testing.assert_allclose(inter[0::2], TemporalState().features(a, ["A"] * 20))
    np.testing.assert_allclose(inter[1::2], TemporalState().features(b, ["B"] * 20))
    alone = TemporalState().features(a)
    assert (alone[:, COL["util_std"]] == 0).all()
    assert (inter[0::2][2:, COL["util_std"]] > 40).all()  # duty cycle seen through history


def test_duty_cycle_and_memory_held_while_util_drops() -> None:
    duty = TemporalState(window=10).features(_rows([100, 100, 0, 0, 0] * 6), ["g"] * 30)[-1]
    flat = TemporalState(window=10).features(_rows([100] * 30), ["g"] * 30)[-1]
    assert duty[COL["util_crossings"]] == pytest.approx(0.4)  # 4 crossings in 10 samples
    assert flat[COL["util_crossings"]] == 0 and flat[COL["util_std"]] == 0
    assert duty[COL["fb_held_util_drop"]] == pytest.approx(0.5)  # half the memory, 0..100%
    assert flat[COL["fb_held_util_drop"]] == 0
    assert duty[COL["util_busy_frac"]] == pytest.approx(0.4)


def test_unreadable_series_give_nan_not_numbers() -> None:
    X = _rows([100] * 5)
    X[:, J["power_readings.power_draw"]] = np.nan  # GeForce boards with power N/A
    T = TemporalState().features(X, ["g"] * 5)
    assert np.isnan(T[:, COL["power_cv"]]).all() and np.isnan(T[:, COL["power_at_cap_frac"]]).all()
    assert np.isfinite(T[:, COL["util_mean"]]).all()
    X[2, J["utilization.gpu_util"]] = np.nan  # one dropped reading: carried forward
    T = TemporalState().features(X, ["g"] * 5)
    assert np.isfinite(T[:, COL["util_mean"]]).all()


def test_state_forgets_the_least_recent_gpu() -> None:
    st = TemporalState(max_gpus=2)
    for g in ("a", "b", "c"):
        st.features(_rows([1, 2]), [g, g])
    assert len(st) == 2 and "a" not in st and "c" in st
    with pytest.raises(ValueError, match="uuids"):
        st.features(_rows([1, 2]), ["x"])


def test_calibrated_threshold_meets_the_target_fpr() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(5000), np.ones(500)].astype(int)
    s = np.r_[rng.random(5000) * 0.8, 0.5 + rng.random(500) * 0.5].astype(np.float32)
    for target in (0.0, 0.001, 0.01, 0.1):
        t = m.calibrate_threshold(y, s, target)
        assert (s[y == 0] >= t).mean() <= target
        # the lowest such threshold: one benign score more would be flagged just below it
        assert (s[y == 0] >= np.nextafter(np.float32(t), np.float32(0))).mean() > target or t <= 0
    assert m.recall_at_fpr(y, s, 0.0) == pytest.approx((s[y == 1] > s[y == 0].max()).mean())


def test_rows_with_utilisation_na_get_their_own_threshold_mapped_onto_the_shared_one() -> None:
    rng = np.random.default_rng(1)
    s = rng.random(4000).astype(np.float32)
    na = rng.random(4000) < 0.3
    t, tn = 0.6, 0.95
    out = m.rescale_na(s, na, t, tn)
    np.testing.assert_array_equal(out[~na], s[~na])  # readable rows untouched
    # monotone within the N/A regime, and its threshold lands exactly on the shared one
    order = np.argsort(s[na])
    assert (np.diff(out[na][order]) >= 0).all()
    np.testing.assert_array_equal(out[na] >= np.float32(t), s[na] >= np.float32(tn))
    assert (out >= 0).all() and (out <= 1).all()


def _regime_scorer(na_benign: tuple[float, float]):
    """A scorer (a fit's result) whose benign rows score per regime: N/A rows ``na_benign``."""

    def fit(_train: m.Dataset):
        def score(d: m.Dataset) -> np.ndarray:
            rng = np.random.default_rng(len(d))
            na = np.isnan(d.X[:, UTIL])
            s = np.where(na, rng.uniform(*na_benign, len(d)), rng.uniform(0.0, 0.5, len(d)))
            return np.where(d.y == 1, rng.uniform(0.9, 1.0, len(d)), s).astype(np.float32)

        return score

    return fit


def _with_mig(ds: m.Dataset) -> m.Dataset:
    X = ds.X.copy()
    gpus = np.unique(ds.gpu)
    X[np.isin(ds.gpu, gpus[: len(gpus) // 3]), UTIL] = np.nan  # a third of the boards: MIG
    return m.Dataset(X, ds.y, ds.gpu, ds.time, ds.profile, ds.T)


def test_calibration_keeps_each_regime_at_the_target_fpr(fleet) -> None:
    """MIG-like rows (utilisation N/A) scoring high must not take the shared FPR budget."""
    ds, target = _with_mig(fleet.ds), 0.01
    t, info = m.oof_threshold(ds, _regime_scorer((0.3, 0.95)), target, split_na=True)
    assert info["na_threshold"] > t  # the N/A regime is the stricter one
    # one pooled threshold would have been spent on the N/A rows
    pooled, _ = m.oof_threshold(ds, _regime_scorer((0.3, 0.95)), target)
    assert pooled > 0.5
    s = _regime_scorer((0.3, 0.95))(ds)(ds)
    na = np.isnan(ds.X[:, UTIL])
    out = m.rescale_na(s, na, t, info["na_threshold"])
    for regime in (na, ~na):
        benign = regime & (ds.y == 0)
        assert (out[benign] >= t).mean() <= target + 1e-9
    # readable miners are all caught; N/A ones where they beat their regime's threshold
    assert (out[(ds.y == 1) & ~na] >= t).all()
    mig = (ds.y == 1) & na
    np.testing.assert_array_equal(out[mig] >= t, s[mig] >= info["na_threshold"])
    # never loosened: N/A rows that score low keep the pooled threshold
    t2, info2 = m.oof_threshold(ds, _regime_scorer((0.0, 0.2)), target, split_na=True)
    assert "na_threshold" not in info2


def _kinds_fleet(gpus: int = 60, rows: int = 40) -> m.Dataset:
    """A synthetic fleet of GPUs in pairs of one board kind (GPU i and i + 30), a third mining."""
    gpu = np.repeat([f"gpu-{i:03d}" for i in range(gpus)], rows)
    y = np.repeat((np.arange(gpus) % 3 == 0).astype(np.int64), rows)
    X = np.zeros((len(y), N_FEATURES))
    X[:, UTIL] = 50.0
    t = np.tile(np.arange(rows, dtype=np.float64), gpus)
    return m.Dataset(X, y, gpu, t, np.where(y == 1, "mining", "benign"))


def _kind_of(gpu: str) -> int:
    return int(gpu.removeprefix("gpu-")) % 30


def _unseen_kind_scorer(calls: list[set[str]], hard: tuple[int, ...] = (1, 2)):
    """A fit whose benign rows of a ``hard`` kind score high when neither GPU of that kind was
    in its training part (a board the fold model never saw), as a real fleet's few hard benign
    episodes do; every other benign row scores low."""

    def fit(train: m.Dataset):
        seen = {_kind_of(g) for g in np.unique(train.gpu)}
        calls.append(set(np.unique(train.gpu)))

        def score(d: m.Dataset) -> np.ndarray:
            rng = np.random.default_rng(len(d))
            kind = np.array([_kind_of(g) for g in d.gpu])
            high = np.isin(kind, [k for k in hard if k not in seen])
            benign = np.where(high, rng.uniform(0.6, 0.99, len(d)), rng.uniform(0, 0.5, len(d)))
            return np.where(d.y == 1, rng.uniform(0.95, 1.0, len(d)), benign).astype(np.float32)

        return score

    return fit


def test_repeated_fold_draws_pool_their_out_of_fold_scores_and_steady_the_threshold() -> None:
    """The threshold for a small FPR is set by the few benign GPUs whose kind their fold model
    never saw, so one fold draw's threshold moves with the draw; pooling draws steadies it."""
    ds, target = _kinds_fleet(), 0.01
    calls: list[set[str]] = []
    t, info = m.oof_threshold(ds, _unseen_kind_scorer(calls), target, folds=3, repeats=4)
    # folds x repeats trainings, on different partitions of the GPUs
    assert len(calls) == 12 and len({frozenset(c) for c in calls}) == 12
    assert info["repeats"] == 4 and info["val_rows"] == len(ds)
    assert info["val_fpr"] <= target  # the target holds over every draw's scores together
    assert info["threshold_draw_min"] <= t <= info["threshold_draw_max"]
    # one draw is the plain out-of-fold threshold of that fold seed
    one, one_info = m.oof_threshold(ds, _unseen_kind_scorer([]), target, folds=3)
    assert one_info["threshold_draw_min"] == one == one_info["threshold_draw_max"]

    def spread(repeats: int) -> float:
        ts = [
            m.oof_threshold(ds, _unseen_kind_scorer([]), target, 3, seed, repeats=repeats)[0]
            for seed in range(16)
        ]
        return float(np.std(ts))

    assert spread(8) < 0.5 * spread(1)  # about 0.04 against 0.20


def test_a_booster_with_an_na_threshold_rescales_na_rows_wherever_it_scores(fleet) -> None:
    ds = _with_mig(fleet.ds)
    booster = m.train(ds, m.TrainParams(n_estimators=20, max_depth=3, latch=False))
    plain = m.score(booster, ds.X)
    booster.set_attr(threshold="0.6", na_threshold="0.9")
    again = m.load_booster(m.save_booster(booster))
    na = np.isnan(ds.X[:, UTIL])
    np.testing.assert_array_equal(m.score(again, ds.X), m.rescale_na(plain, na, 0.6, 0.9))


def test_temporal_booster_stores_its_features_threshold_and_scores_through_state(fleet) -> None:
    train = fleet.ds.subset(fleet.train_idx)
    booster, info = m.fit_calibrated(
        train, m.TrainParams(n_estimators=30, max_depth=4, temporal=True), 0.01
    )
    assert list(m.booster_features(booster)[-len(TEMPORAL) :]) == list(TEMPORAL)
    assert m.booster_temporal(booster) == 20 and info["val_fpr"] <= 0.01
    assert m.booster_threshold(booster) == pytest.approx(info["threshold"])
    again = m.load_booster(m.save_booster(booster))
    assert m.booster_threshold(again) == m.booster_threshold(booster)
    test = fleet.ds.subset(fleet.test_idx)
    s = m.score_dataset(again, test)
    assert s.shape == (len(test),) and m.evaluate(test.y, s, test.profile)["roc_auc"] > 0.9
    # the online path (a state fed in time order per GPU) gives the batch scores
    order = np.lexsort((test.time, test.gpu))
    st = TemporalState()
    online = np.concatenate(
        [
            m.score(again, test.X[order][i : i + 50], test.gpu[order][i : i + 50].tolist(), st)
            for i in range(0, len(test), 50)
        ]
    )
    np.testing.assert_allclose(online, s[order], atol=1e-6)


def test_independent_generator_is_labelled_and_readable(tmp_path) -> None:
    data, labels = gen2.generate(tmp_path, gpus=len(gen2.WORKLOADS), hours=1, seed=3)
    recs = [json.loads(x) for x in data.read_text().splitlines()]
    rows = list(csv.DictReader(labels.open()))
    assert len(rows) == len(recs) == len(gen2.WORKLOADS) * 120
    assert {r["profile"] for r in rows} == set(gen2.WORKLOADS)
    assert all(r["mining"] == str(int(r["profile"] in gen2.MINING)) for r in rows)
    X = to_matrix(recs)
    power = X[:, J["power_readings.power_draw"]]
    names = np.array([r["nvidia_smi_log.gpu.product_name"] for r in recs])
    assert np.isnan(power[names == "NVIDIA GeForce GTX 1050"]).all()  # power N/A board
    assert np.isfinite(power[names == "NVIDIA A40"]).all()  # 580 layout: instant_power_draw
    ds, counts = m.build_dataset(recs, m.read_labels(str(labels)))
    assert counts["unlabelled"] == 0 and ds.T is not None and ds.T.shape == (len(ds), len(TEMPORAL))
    # the physics: a power-limited miner draws no more than the board's minimum limit
    lim = [r for r, row in zip(recs, rows, strict=True) if row["profile"] == "mine_power_limited"]
    board = {b.name: b for b in gen2.BOARDS}[lim[0]["nvidia_smi_log.gpu.product_name"]]
    draws = to_matrix(lim)[:, J["power_readings.power_draw"]]
    assert np.nanmax(draws) <= board.pl_min * 1.05


def test_batch_pipeline_scores_a_temporal_booster_with_per_gpu_history(fleet, tmp_path) -> None:
    from training import abp_pipeline as pipe

    train = fleet.ds.subset(fleet.train_idx)
    booster = m.train(train, m.TrainParams(n_estimators=20, max_depth=4, temporal=True))
    path = tmp_path / "temporal.ubj"
    booster.save_model(str(path))
    out = tmp_path / "scored.jsonlines"
    # small blocks: a GPU's history crosses many of them
    pipe.run([str(fleet.data)], str(out), pipe.local_scorer(str(path))[0], batch_size=333,
             progress=False)  # fmt: skip
    got = np.array([json.loads(x)["mining_score"] for x in out.read_text().splitlines()])
    uuids = [r["nvidia_smi_log.gpu.uuid"] for r in fleet.records]
    want = m.score(booster, to_matrix(fleet.records), uuids, TemporalState())
    np.testing.assert_allclose(got, want, atol=1e-6)
    alone = m.score(booster, to_matrix(fleet.records))  # no history: a different input
    assert not np.allclose(got, alone, atol=1e-3)
