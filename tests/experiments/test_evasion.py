"""ABP evasion search: the board model, the frontier, the CLI and the MLflow report."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from secml.abp import evasion as ev
from secml.abp import model as m


@pytest.fixture(scope="module")
def data(small_fleet) -> tuple[m.Dataset, object]:
    ds, _ = m.build_dataset(
        m.read_jsonlines(str(small_fleet)), m.read_labels(str(small_fleet.parent / "labels.csv"))
    )
    booster = m.train(ds, m.TrainParams(n_estimators=60, max_depth=4))
    return ds, booster


def test_no_attack_is_the_identity(data) -> None:
    ds, booster = data
    idx = ev.mining_base(ds)
    base = ds.subset(idx)
    X, kept = ev.apply(base, ev.boards_of(ds, idx), ev.Controls())
    np.testing.assert_allclose(X, base.X, rtol=1e-5, equal_nan=True)
    assert np.all(kept == 1.0)


def test_controls_stay_within_the_boards_limits(data) -> None:
    ds, _ = data
    idx = ev.mining_base(ds)
    base, boards = ds.subset(idx), ev.boards_of(ds, idx)
    c = ev.Controls(power_limit=0.4, core_clock=0.5, mem_clock=0.6, intensity=0.7)
    X, kept = ev.apply(base, boards, c)
    power = X[:, ev.POWER]
    ok = np.isfinite(power)
    assert np.all(power[ok] <= 0.4 * boards.p_max[ok] + 1e-3)  # under the power limit
    assert np.all(X[:, ev.GCLK] <= 0.5 * boards.max_g + 1e-3)  # under the core lock
    assert np.all(X[:, ev.MCLK] <= 0.6 * boards.max_m + 1e-3)  # under the memory lock
    assert np.all(X[:, ev.UTIL] <= base.X[:, ev.UTIL] * 0.7 + 1e-3)
    assert 0 < kept.mean() < 0.7  # every knob costs hash rate
    # a duty cycle of 30%: 3 samples of every 10 mine, the rest idle with the memory held
    X, kept = ev.apply(base, boards, ev.Controls(duty=0.3))
    assert kept.mean() == pytest.approx(0.3, abs=0.05)
    off = kept == 0
    np.testing.assert_array_equal(X[off, ev.FB_USED], base.X[off, ev.FB_USED])
    assert np.nanmax(X[off, ev.UTIL]) < np.nanmin(base.X[off, ev.UTIL])


def test_outside_the_limits_is_refused_naming_the_control() -> None:
    with pytest.raises(ValueError, match="power_limit"):
        ev.Controls(power_limit=0.1)
    with pytest.raises(ValueError, match="duty"):
        ev.Controls(duty=1.5)


def test_frontier_is_the_worst_recall_per_budget(data) -> None:
    ds, booster = data
    report = ev.search(booster, ds, n_configs=40, seed=3)
    assert len(report.configs) == 46  # no attack + one per knob + 40 random
    base = report.configs[0]
    assert base["hashrate_kept"] == 1.0 and base["recall"] == report.baseline_recall
    worst = [report.frontier[f"{b:.2f}"]["worst_recall"] for b in ev.BUDGETS]
    assert worst == sorted(worst)  # a bigger budget leaves the attacker fewer settings
    for b in ev.BUDGETS:
        f = report.frontier[f"{b:.2f}"]
        assert f["config"]["hashrate_kept"] >= b - 1e-9
        assert f["worst_recall"] == min(
            c["recall"] for c in report.configs if c["hashrate_kept"] >= b - 1e-9
        )
    json.dumps(report.as_dict())  # the artifact is plain JSON


def test_robustness_gate_is_off_by_default(stack_settings) -> None:
    ok, why = ev.robustness_gate("1", m.Dataset(*(np.empty(0),) * 5), settings=stack_settings)
    assert ok and "off" in why


@pytest.mark.integration
def test_report_for_the_production_model_in_mlflow(data, small_fleet, mlflow_server,
                                                   prefect_server, capsys) -> None:  # fmt: skip
    """Train and promote a model, then the CLI reports on ``models:/<name>@production``."""
    import uuid

    from mlflow import MlflowClient

    from training.abp_flow import abp_train

    name = f"abp-evasion-{uuid.uuid4().hex[:8]}"
    res = abp_train(data=[str(small_fleet)], model_name=name, use_store_labels=False,
                    min_recall=0.0, n_estimators=60)  # fmt: skip
    assert res["gate"]["promoted"]
    code = ev.main(["--model", f"models:/{name}@production", "--data", str(small_fleet),
                    "--configs", "20"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    run_id = out.strip().rsplit("run ", 1)[1]
    client = MlflowClient()
    run = client.get_run(run_id)
    assert "baseline_recall" in run.data.metrics
    assert "worst_recall_hashrate_ge_0.50" in run.data.metrics
    arts = {f.path for f in client.list_artifacts(run_id)}
    assert {"evasion.json", "evasion_configs.csv"} <= arts
    assert "plots/evasion_frontier.png" in {f.path for f in client.list_artifacts(run_id, "plots")}
    tags = client.get_model_version(name, res["version"]).tags
    assert tags["evasion_run_id"] == run_id
    # the gate's opt-in check runs the same search and says why
    s = mlflow_server.model_copy(update={"abp_robustness_gate": True,
                                         "abp_robustness_min_recall": 1.01})  # fmt: skip
    ds, _ = data
    ok, why = ev.robustness_gate(res["version"], ds, name, settings=s)
    assert not ok and "is below the minimum 1.01" in why
    # what the promotion gate's one-line call returns: off (default settings) keeps its decision
    assert ev.apply_robustness_gate(True, "passed", res["version"], ds, name) == (True, "passed")
    assert ev.apply_robustness_gate(False, "worse", res["version"], ds, name) == (False, "worse")


def test_cli_names_a_missing_model(capsys, mlflow_server) -> None:
    assert ev.main(["--model", "/nonexistent/booster.ubj", "--no-mlflow"]) == 2
    assert "/nonexistent/booster.ubj" in capsys.readouterr().err
    assert asdict(ev.Controls())["duty"] == 1.0
