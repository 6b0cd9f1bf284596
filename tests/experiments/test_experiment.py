"""Experiment files end to end: the CLI, the Prefect deployment (on Dask), an installed plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from secml.settings import ROOT

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "examples"


def _small(tmp: Path, **changes) -> Path:
    """The example robustness file, smaller, writing under ``tmp``."""
    doc = yaml.safe_load((EXAMPLES / "experiments" / "robustness.yaml").read_text())
    doc["datasets"][0]["params"] = {"gpus": 20, "hours": 2}
    doc["datasets"][1]["params"] = {"users": 10, "days": 10, "test_days": 2}
    doc["detectors"][0]["params"] = {"n_estimators": 40, "max_depth": 4}
    doc["detectors"][1]["params"] = {"max_epochs": 3}
    doc["attacks"][0]["params"] = {"configs": 20}
    doc["output_dir"] = str(tmp / "out")
    doc.update(changes)
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_cli_runs_the_example_end_to_end(tmp_path, mlflow_server, prefect_server, capsys) -> None:
    from mlflow import MlflowClient

    from training import experiment as cli

    assert cli.main(["run", str(_small(tmp_path))]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    det, att = out["detectors"], out["attacks"]
    assert set(det) == {"xgb", "generic-ae"} and set(att) == {"evasion", "mimicry", "spray"}
    assert 0 <= det["xgb"]["metrics"]["recall"] <= 1
    assert "worst_recall_hashrate_ge_0.50" in att["evasion"]["metrics"]
    for name in ("mimicry", "spray"):
        m = att[name]["metrics"]
        assert 0 <= m["recall"] <= 1 and m["attack_events"] > 0
    # the report stage wrote and archived the results
    with tarfile.open(out["archive"]) as tar:
        names = tar.getnames()
    assert any(n.endswith("results.json") for n in names)
    assert any(n.endswith("figures/evasion-evasion_frontier.png") for n in names)
    assert any(n.endswith("tables/spray-events.csv") for n in names)
    # one parent MLflow run, a nested run per detector and attack
    client = MlflowClient()
    parent = client.get_run(out["mlflow_run_id"])
    kids = client.search_runs([parent.info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.info.run_id}'")  # fmt: skip
    assert sorted(r.data.tags["stage"] for r in kids) == ["attack"] * 3 + ["train"] * 2
    arts = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert "results.json" in arts and any(a.endswith(".tar.gz") for a in arts)


def test_deployment_runs_the_file_on_dask(tmp_path, prefect_worker) -> None:
    """``experiment/default`` on the session's worker, detectors and attacks on 2 Dask workers."""
    import time

    from prefect import get_client
    from prefect.client.schemas.objects import StateType

    path = _small(tmp_path, runner={"dask": True, "workers": 2}, mlflow=False)
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("experiment/default")
        run = client.create_flow_run_from_deployment(dep.id, parameters={"file": str(path)})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state and run.state.is_final():
                break
            time.sleep(3)
    assert run.state.type == StateType.COMPLETED, run.state
    results = list((tmp_path / "out").glob("robustness-*/results.json"))
    assert len(results) == 1
    res = json.loads(results[0].read_text())
    assert set(res["attacks"]) == {"evasion", "mimicry", "spray"}


def test_plugin_installed_from_examples_is_picked_up(tmp_path, prefect_server) -> None:
    """pip-install the example package; the registry finds it with no change to secml."""
    target = tmp_path / "site"
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    run = [sys.executable, "-m", "training.experiment"]
    plugin_file = str(EXAMPLES / "experiments" / "with-plugin.yaml")
    # before: the file names plugins nobody installed
    before = subprocess.run([*run, "validate", plugin_file], cwd=ROOT, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert before.returncode == 2
    assert "detectors[0].kind: no detector plugin named 'abp-logistic'" in before.stderr
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLES / "secml-plugin-example")],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    env["PYTHONPATH"] = str(target)
    listed = subprocess.run([*run, "plugins"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert found["detectors"]["abp-logistic"] == "secml_plugin_example:LogisticDetector"
    assert found["attacks"]["abp-gaussian-noise"] == "secml_plugin_example:NoiseAttack"
    doc = yaml.safe_load(Path(plugin_file).read_text())
    doc["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "plugin.yaml"
    path.write_text(yaml.safe_dump(doc))
    done = subprocess.run([*run, "run", str(path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["detectors"]["logistic"]["kind"] == "abp-logistic"
    noise = out["attacks"]["noise"]["metrics"]
    assert 0 <= noise["recall_after"] <= 1 and 0 <= noise["recall_before"] <= 1
