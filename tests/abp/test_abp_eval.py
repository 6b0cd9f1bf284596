"""The evaluation command end to end on tiny fleets: tables printed, MLflow run logged."""

from __future__ import annotations

import json

import numpy as np

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
                          "--detectors", "lr", "xgb", "--splits", "lopo", "indep",
                          "--xgb", '{"max_depth": 3}', "--json", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "leave one mining profile out" in text and "independent generator" in text
    assert "recall at FPR<=0.001" in text and text.count("lr") >= 2
    res = json.loads(out.read_text())
    assert set(res) == {"lopo", "indep"} and set(res["indep"]) == {"lr", "xgb"}
    ind = res["indep"]["xgb"]
    assert 0 <= ind["recall_at_fpr"] <= 1 and 0 <= ind["segment_recall"] <= 1
    assert any(k.startswith("recall/mine_") for k in ind)
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
    import pytest

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
