"""``abp-train`` step caching against real MLflow and Prefect: a re-run on unchanged data hits."""

from __future__ import annotations

import shutil
import uuid

import pytest

pytestmark = pytest.mark.integration

STEPS = ("featurise", "split", "fit", "evaluate", "register")


@pytest.fixture(scope="module")
def runs(small_fleet, mlflow_server, prefect_server, tmp_path_factory) -> dict:
    from training.abp_flow import abp_train

    # a copy of the data of this module's own, so the later edit touches nobody else's file
    d = tmp_path_factory.mktemp("cache")
    for f in small_fleet.parent.iterdir():
        shutil.copy(f, d / f.name)
    kw = {"data": [str(d / small_fleet.name)], "model_name": f"abp-cache-{uuid.uuid4().hex[:8]}",
          "use_store_labels": False, "min_recall": 0.0, "n_estimators": 150}  # fmt: skip
    first = abp_train(**kw)
    second = abp_train(**kw)
    # one changed record: the data hash changes, so every step runs again
    lines = (d / small_fleet.name).read_text().splitlines()
    lines[0] = lines[0].replace('gpu_util":"', 'gpu_util":"1', 1)
    assert lines[0] != (d / small_fleet.name).read_text().splitlines()[0]
    (d / small_fleet.name).write_text("\n".join(lines) + "\n")
    changed = abp_train(**kw)
    return {"first": first, "second": second, "changed": changed, "kw": kw}


def test_first_run_misses_every_step(runs) -> None:
    assert runs["first"]["cache"] == {s: "miss" for s in STEPS}


def test_rerun_on_unchanged_data_hits_every_step(runs) -> None:
    first, second = runs["first"], runs["second"]
    assert second["cache"] == {s: "hit" for s in STEPS}
    # the same model version and metrics come back; nothing was trained or registered again
    assert second["version"] == first["version"] and second["run_id"] == first["run_id"]
    assert second["metrics"] == first["metrics"]
    from mlflow import MlflowClient

    versions = MlflowClient().search_model_versions(f"name = '{runs['kw']['model_name']}'")
    assert len(versions) == 2  # first (reused by second) and changed


def test_cache_hits_are_visible_in_the_flow_run(runs) -> None:
    """Prefect recorded the second run's task runs in the ``Cached`` state."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateName,
    )

    state = TaskRunFilterState(name=TaskRunFilterStateName(any_=["Cached"]))
    with get_client(sync_client=True) as client:
        cached = client.read_task_runs(task_run_filter=TaskRunFilter(state=state))
    names = {t.name.rsplit("-", 1)[0] for t in cached}
    assert {f"abp-{s}" for s in STEPS} <= names


def test_changed_data_misses_again(runs) -> None:
    changed = runs["changed"]
    assert changed["cache"]["featurise"] == "miss" and changed["cache"]["fit"] == "miss"
    assert changed["version"] != runs["first"]["version"]
