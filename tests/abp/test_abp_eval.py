"""The evaluation command end to end on tiny fleets: tables printed, MLflow run logged."""

from __future__ import annotations

import json

import numpy as np
import pytest

from secml.abp import model as m
from training import abp_eval


def test_eval_prints_every_split_beside_the_baseline_and_logs_to_mlflow(
    tmp_path, monkeypatch, capsys
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("SECML_MLFLOW_TRACKING_URI", uri)
    from secml.settings import get_settings

    get_settings.cache_clear()
    out = tmp_path / "res.json"
    code = abp_eval.main(["--seeds", "0", "--gpus", "17", "--hours", "1", "--interval", "60",
                          "--indep-gpus", "15", "--indep-hours", "1", "--trees", "5",
                          "--detectors", "lr", "xgb", "--splits", "lopo", "indep", "ceiling",
                          "--xgb", '{"max_depth": 3}', "--json", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "leave one mining profile out" in text and "independent generator" in text
    assert "recall at FPR<=0.001" in text and text.count("lr") >= 2
    res = json.loads(out.read_text())
    assert set(res) == {"lopo", "indep", "ceiling"} and set(res["indep"]) == {"lr", "xgb"}
    # the ceiling: the same test fleet, trained on another fleet of its own generator
    assert "ceiling: trained on another fleet of the independent generator" in text
    assert res["ceiling"]["xgb"]["segments"] == res["indep"]["xgb"]["segments"]
    assert res["ceiling"]["xgb"]["roc_auc"] != res["indep"]["xgb"]["roc_auc"]
    ind = res["indep"]["xgb"]
    assert 0 <= ind["recall_at_fpr"] <= 1 and 0 <= ind["segment_recall"] <= 1
    assert any(k.startswith("recall/mine_") for k in ind)
    for res_split in res.values():  # replicates became a 95% interval
        for vals in res_split.values():
            assert 0 <= vals["recall_at_fpr_low"] <= vals["recall_at_fpr_high"] <= 1
            assert not any(k.startswith("_boot") for k in vals)
    assert "95% interval" in text and "gain over lr" in text
    for res_split in res.values():  # paired: xgb's gain over the baseline on the same resamples
        assert "recall_at_fpr_over_lr_low" not in res_split["lr"]
        gain = res_split["xgb"]
        assert -1 <= gain["recall_at_fpr_over_lr_low"] <= gain["recall_at_fpr_over_lr_high"] <= 1
    assert any(k.startswith("fpr/render_powercap") for k in ind)
    assert "MLflow: logged to" in text
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[abp_eval.EXPERIMENT])
    assert len(runs) == 1 and "metrics.indep.xgb.roc_auc" in runs.columns
    assert "'max_depth': 3" in runs.iloc[0]["params.xgb"]
    assert abp_eval.XGB_OVERRIDES == {"max_depth": 3}
    get_settings.cache_clear()


def test_eval_refuses_overrides_that_are_not_train_params(capsys) -> None:
    for bad in ('{"bogus": 1}', '{"seed": 4}'):
        with pytest.raises(SystemExit) as exc:
            abp_eval.main(["--xgb", bad, "--no-mlflow"])
        assert exc.value.code == 2
        assert "not TrainParams fields" in capsys.readouterr().err


def test_segments_and_time_to_detect() -> None:
    # one GPU: benign, mining episode of 4 (first flag at its 3rd sample), benign, episode of 2
    y = np.array([0, 1, 1, 1, 1, 0, 1, 1])
    prof = np.array(["idle", "m", "m", "m", "m", "idle", "m", "m"])
    ds = m.Dataset(np.zeros((8, 18), np.float32), y, np.array(["g"] * 8),
                   np.arange(8.0), prof)  # fmt: skip
    segs = abp_eval.segments(ds)
    assert [s.tolist() for s in segs] == [[1, 2, 3, 4], [6, 7]]
    s = np.array([0, 0, 0, 0.9, 0.9, 0, 0, 0], dtype=np.float32)
    res = abp_eval.metrics(ds, np.array(["B"] * 8), s, 0.5, 0.001)
    assert res["segment_recall"] == 0.5 and res["median_ttd"] == 3
    assert res["recall"] == 2 / 6 and res["fpr"] == 0


def test_resampled_recall_at_fpr_is_recall_at_fpr_of_the_repeated_rows() -> None:
    # ties included (scores on a coarse grid); a group drawn c times counts its rows c times
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(5, 300))
        y = (rng.random(n) < rng.uniform(0.05, 0.9)).astype(int)
        s = np.round(rng.random(n), int(rng.integers(1, 4))).astype(np.float32)
        _, g = np.unique(rng.integers(0, 6, n), return_inverse=True)
        fpr = float(rng.choice([0.0, 0.001, 0.05, 0.3]))
        counts = rng.integers(0, 3, (3, g.max() + 1))
        counts[0] = 1
        got = m.recall_at_fpr_resampled(y, s, g, fpr, counts)
        for b, c in enumerate(counts):
            parts = [np.flatnonzero(g == k) for k in range(len(c)) for _ in range(c[k])]
            idx = np.concatenate(parts or [np.array([], int)])
            want = m.recall_at_fpr(y[idx], s[idx], fpr) if len(idx) else float("nan")
            assert np.isnan(got[b]) == np.isnan(want)
            if not np.isnan(want):
                assert got[b] == pytest.approx(want, abs=1e-12)


def _fleet_scores(outlier: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10 benign GPUs (one, if ``outlier``, runs a miner-like episode scoring 0.95) and 5
    mining GPUs scoring 0.9: 100 rows each."""
    y, s, g = [], [], []
    for k in range(15):
        mining = k >= 10
        y += [int(mining)] * 100
        g += [k] * 100
        level = 0.9 if mining else (0.95 if outlier and k == 0 else 0.1)
        s += [level] * 100
    return np.array(y), np.array(s, np.float32), np.array(g)


def test_the_interval_shows_when_one_benign_gpu_sets_the_threshold() -> None:
    y, s, g = _fleet_scores(outlier=True)
    assert m.recall_at_fpr(y, s, 0.001) == 0.0  # the one miner-like benign GPU outranks them
    reps = m.recall_at_fpr_interval(y, s, g, 0.001, n_boot=200, seed=1)
    assert reps.shape == (200,) and set(np.unique(reps)) == {0.0, 1.0}
    # a resample leaves that GPU out with probability (1 - 1/15) ** 15, about 36%
    assert 0.2 < (reps == 1.0).mean() < 0.5
    assert np.array_equal(reps, m.recall_at_fpr_interval(y, s, g, 0.001, n_boot=200, seed=1))
    y, s, g = _fleet_scores(outlier=False)
    assert (m.recall_at_fpr_interval(y, s, g, 0.001, n_boot=50) == 1.0).all()


def test_the_paired_gain_resamples_both_detectors_with_the_same_gpus() -> None:
    y, s, g = _fleet_scores(outlier=False)
    assert m.recall_at_fpr_gain(y, s, s.copy(), g, 0.001) == (0.0, 0.0)
    # the other detector misses one of the five mining GPUs (scored under every benign row):
    # never better, worse in every resample that draws that GPU (about 64%)
    worse = np.where(g == 14, np.float32(0.05), s)
    low, high = m.recall_at_fpr_gain(y, s, worse, g, 0.001, n_boot=200, seed=3)
    assert high == 0.0 and -1.0 < low < -0.1
    low2, high2 = m.recall_at_fpr_gain(y, worse, s, g, 0.001, n_boot=200, seed=3)
    assert (low2, high2) == (-high, -low)  # the same resamples, the sign reversed
    benign_only = np.zeros_like(y)
    assert all(np.isnan(m.recall_at_fpr_gain(benign_only, s, worse, g, 0.001)))


def test_folds_and_seeds_average_replicates_into_an_interval() -> None:
    a = {"recall_at_fpr": 0.5, abp_eval.BOOT: np.array([0.0, 1.0, np.nan, 0.5])}
    b = {"recall_at_fpr": 1.0, abp_eval.BOOT: np.array([1.0, 1.0, 1.0, np.nan])}
    mean = abp_eval._mean([a, b])
    assert mean["recall_at_fpr"] == 0.75
    assert mean[abp_eval.BOOT].tolist() == [0.5, 1.0, 1.0, 0.5]
    out = abp_eval._intervals(mean)
    assert abp_eval.BOOT not in out and out["recall_at_fpr"] == 0.75
    assert out["recall_at_fpr_low"] == pytest.approx(0.5) and out["recall_at_fpr_high"] == 1.0


def test_the_gain_over_the_baseline_is_paired_replicate_by_replicate() -> None:
    base = np.array([0.2, 0.5, 0.4, 0.3])
    means = {
        "lr": {"recall_at_fpr": 0.3, abp_eval.BOOT: base},
        "xgb": {"recall_at_fpr": 0.5, abp_eval.BOOT: base + 0.2},  # always 0.2 better
    }
    out = abp_eval._with_intervals(means)
    # unpaired, the intervals overlap; paired, the gain is 0.2 in every resample
    assert out["xgb"]["recall_at_fpr_low"] < out["lr"]["recall_at_fpr_high"]
    assert out["xgb"]["recall_at_fpr_over_lr_low"] == pytest.approx(0.2)
    assert out["xgb"]["recall_at_fpr_over_lr_high"] == pytest.approx(0.2)
    assert "recall_at_fpr_over_lr_low" not in out["lr"]
    assert "recall_at_fpr_over_lr_low" not in abp_eval._with_intervals({"xgb": means["xgb"]})["xgb"]
