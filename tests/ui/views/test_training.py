"""AppTest of the Training page: start deployments, watch run states."""

from __future__ import annotations

import json
import socket

import pytest

from secml.settings import get_settings

from ..conftest import frame_with, page_app, texts


def test_prefect_down_is_reported(ui_settings, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SECML_PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    get_settings.cache_clear()
    at = page_app("training").run()
    assert not at.exception
    assert any(f"127.0.0.1:{port}/api is not available" in e for e in texts(at.error))
    links = " ".join(texts(at.markdown))
    assert f"http://127.0.0.1:{port}" in links and ui_settings.mlflow_tracking_uri in links


@pytest.mark.integration
def test_start_with_a_control_message_and_watch_the_run(prefect_worker) -> None:
    from prefect.states import Cancelled

    from ui import backend, clients

    settings = prefect_worker
    at = page_app("training").run()
    assert not at.exception
    at.selectbox(key="t_deployment").select("dfp-infer/default").run()
    at.radio(key="t_mode").set_value("control message").run()
    at.selectbox(key="t_example").select("duo-inference-payload.json").run()
    at.button(key="t_start").click().run()
    assert not at.exception
    started = [s for s in texts(at.success) if s.startswith("Started ")]
    assert started, texts(at.error) + texts(at.warning)
    run_id = started[0].rsplit("/runs/flow-run/", 1)[1].rstrip(")")
    with clients.prefect(str(settings.prefect_api_url)) as client:
        run = client.read_flow_run(run_id)
        assert run.parameters["message"] == json.loads(
            backend.control_examples()["duo-inference-payload.json"]
        )
        client.set_flow_run_state(run_id, Cancelled(), force=True)
    at.run()
    # the run started from this session is followed: state and links to Prefect and MLflow
    followed = [m for m in texts(at.markdown) if run_id in m]
    assert followed and "state **Cancelled**" in followed[0], texts(at.markdown)
    assert "[MLflow experiments](" in followed[0]
    table = frame_with(at, "deployment")
    row = table[table["prefect"].str.endswith(run_id)]
    assert list(row["deployment"]) == ["dfp-infer/default"]
    assert row["prefect"].iloc[0].startswith(backend.prefect_ui_url(settings))


@pytest.mark.integration
def test_an_empty_parameters_box_starts_nothing(prefect_worker) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    from ui import clients

    settings = prefect_worker
    with clients.prefect(str(settings.prefect_api_url)) as client:
        before = client.count_flow_runs()
    at = page_app("training").run()
    at.selectbox(key="t_deployment").select("abp-train/default").run()
    at.text_area(key="t_params_abp-train/default").input("   ")
    at.button(key="t_start").click().run()
    assert not at.exception
    assert any("parameters box is empty: no run was started" in e for e in texts(at.error))
    assert not [s for s in texts(at.success) if s.startswith("Started ")]
    with clients.prefect(str(settings.prefect_api_url)) as client:
        assert client.count_flow_runs() == before
        assert client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["default"]))
        ), "the deployments exist: the refusal is the page's, not Prefect's"


def test_message_parameter_is_found_by_name() -> None:
    from ui import backend

    assert backend.message_parameter({"message": {}, "seed": {}}) == "message"
    assert backend.message_parameter({"data": {}, "seed": {}}) is None
