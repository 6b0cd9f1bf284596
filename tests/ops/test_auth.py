"""Every unauthenticated (or read-only) write is refused, against the real servers.

Starts its own MLflow, Prefect, Triton and Prometheus through :class:`secml.stack.Stack` with
generated secrets (as ``make up`` does) on free ports, then tries writes without credentials,
with the read-only account and with the writer.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from secml.settings import Settings
from secml.stack import Stack, StackError, free_ports
from secml.stack import secrets as local_secrets
from secml.stack.preparation import TRITON_ADMIN_HEADER
from training.consumer.dispatch import DispatchError, PrefectDispatcher
from training.consumer.validation import Dispatch

pytestmark = pytest.mark.integration

PORTS = (
    "mlflow_port",
    "prefect_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
    "prometheus_port",
)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """MLflow, Prefect, Triton, Prometheus with the secrets ``make up`` would generate."""
    run_dir = tmp_path_factory.mktemp("secured")
    local_secrets.ensure(run_dir)
    found = local_secrets.read(run_dir)
    secret_fields = {k.removeprefix("SECML_").lower(): v for k, v in found.items() if "SECML_" in k}
    ports = dict(zip(PORTS, free_ports(len(PORTS), 30000, 39999), strict=True))
    s = Settings(
        run_dir=run_dir,
        triton_model_repository=run_dir / "triton_models",
        **ports,
        **secret_fields,
    )
    stack = Stack(s)
    try:
        stack.up(["mlflow", "prefect", "triton", "prometheus"])
    except StackError as exc:
        stack.down()
        pytest.fail(f"could not start the secured servers: {exc}", pytrace=False)
    yield s
    stack.down(timeout_s=10)


def _writer(s: Settings) -> tuple[str, str]:
    assert s.mlflow_password is not None
    return s.mlflow_username, s.mlflow_password.get_secret_value()


def _reader(s: Settings) -> tuple[str, str]:
    assert s.mlflow_reader_password is not None
    return s.mlflow_reader_username, s.mlflow_reader_password.get_secret_value()


def test_generated_secrets_are_private_and_kept(secured: Settings) -> None:
    """``make up`` writes the secrets once, readable by the owner only."""
    path = local_secrets.secrets_file(secured.run_dir)
    assert path.stat().st_mode & 0o777 == 0o600
    before = path.read_text()
    local_secrets.ensure(secured.run_dir)
    assert path.read_text() == before
    assert local_secrets.read(secured.run_dir)["SECML_MLFLOW_PASSWORD"] == _writer(secured)[1]


def test_mlflow_refuses_anonymous_and_read_only_writes(secured: Settings) -> None:
    """No login: 401 on reads and writes; the reader reads and searches, writes get 403."""
    api = f"{secured.mlflow_tracking_uri}/api/2.0/mlflow"
    name = f"auth-{random.randrange(10**9)}"
    anon = httpx.post(f"{api}/experiments/create", json={"name": name}, timeout=10)
    assert anon.status_code == 401
    assert httpx.get(f"{api}/registered-models/search", timeout=10).status_code == 401
    ro = httpx.post(f"{api}/experiments/create", json={"name": name}, auth=_reader(secured))
    assert ro.status_code == 403 and "read-only" in ro.text
    found = httpx.post(f"{api}/experiments/search", json={"max_results": 5}, auth=_reader(secured))
    assert found.status_code == 200, found.text
    ok = httpx.post(f"{api}/experiments/create", json={"name": name}, auth=_writer(secured))
    assert ok.status_code == 200, ok.text
    model = httpx.post(
        f"{api}/registered-models/create", json={"name": name}, auth=_writer(secured)
    )
    assert model.status_code == 200, model.text
    alias = {"name": name, "alias": "production", "version": "1"}
    assert httpx.post(f"{api}/registered-models/alias", json=alias).status_code == 401
    ro_alias = httpx.post(f"{api}/registered-models/alias", json=alias, auth=_reader(secured))
    assert ro_alias.status_code == 403
    gone = {"name": name}
    assert httpx.request("DELETE", f"{api}/registered-models/delete", json=gone).status_code == 401
    # still there: nothing anonymous or read-only changed it
    got = httpx.get(f"{api}/registered-models/get", params=gone, auth=_reader(secured))
    assert got.status_code == 200 and not got.json()["registered_model"].get("aliases")


def test_prefect_api_refuses_anonymous_requests(secured: Settings) -> None:
    """Without the auth string the API answers 401; health probes stay open."""
    api = secured.prefect_api_url
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    anon = httpx.post(f"{api}/flows/", json={"name": "anon-flow"}, timeout=10)
    assert anon.status_code == 401
    wrong = httpx.post(f"{api}/flows/", json={"name": "anon-flow"}, auth=("secml", "wrong"))
    assert wrong.status_code == 401
    ok = httpx.post(f"{api}/flows/", json={"name": "auth-flow"}, auth=secured.prefect_basic_auth())
    assert ok.status_code in (200, 201), ok.text


def test_consumer_dispatches_to_the_secured_prefect_only_with_the_auth_string(
    secured: Settings,
) -> None:
    """The control consumer's REST dispatcher sends Prefect's basic auth: without it the run
    is refused (and would be retried), with it the run exists, once per idempotency key."""
    api, auth = secured.prefect_api_url, secured.prefect_basic_auth()
    assert auth is not None and secured.prefect_api_auth_string is not None
    setup = PrefectDispatcher(api, auth_string=secured.prefect_api_auth_string.get_secret_value())
    try:  # through the dispatcher's requests: a busy Prefect's momentary 503 is asked again
        flow = setup._post("flows/", {"name": "auth-dispatch"})
        dep = setup._post("deployments/", {"name": "secured", "flow_id": flow.json()["id"]})
    finally:
        setup.close()
    d = Dispatch("m-auth-1", "auth-dispatch/secured", {"seed": 1})
    anon = PrefectDispatcher(api, auth_string="")
    try:
        for attempt in (lambda: anon(d), lambda: anon.dispatch_batch(d.deployment, [d])):
            with pytest.raises(DispatchError, match="401"):
                attempt()
    finally:
        anon.close()
    ok = PrefectDispatcher(api, auth_string=secured.prefect_api_auth_string.get_secret_value())
    try:
        run_id = ok(d)
        (again,) = ok.dispatch_batch(d.deployment, [d])
    finally:
        ok.close()
    assert again == run_id  # the idempotency key: one run per message
    run = httpx.get(f"{api}/flow_runs/{run_id}", auth=auth, timeout=10).json()
    assert run["deployment_id"] == dep.json()["id"]
    assert run["parameters"] == {"seed": 1} and "control-message" in run["tags"]
    assert run["state"]["type"] == "SCHEDULED"


def test_triton_repository_api_needs_the_admin_key(secured: Settings) -> None:
    """Load/unload/index over HTTP need the admin header; inference APIs do not."""
    base = f"http://{secured.triton_url}/v2"
    anon = httpx.post(f"{base}/repository/index", json={}, timeout=10)
    assert anon.status_code == 403, anon.text
    unload = httpx.post(f"{base}/repository/models/echo/unload", json={}, timeout=10)
    assert unload.status_code == 403
    assert secured.triton_admin_key is not None
    key = {TRITON_ADMIN_HEADER: secured.triton_admin_key.get_secret_value()}
    ok = httpx.post(f"{base}/repository/index", json={}, headers=key, timeout=10)
    assert ok.status_code == 200, ok.text
    assert httpx.get(f"{base}/health/ready", timeout=10).status_code == 200


def test_prometheus_admin_and_lifecycle_apis_are_off(secured: Settings) -> None:
    """No reload/quit (lifecycle) and no TSDB admin API."""
    url = secured.prometheus_url
    reload = httpx.post(f"{url}/-/reload", timeout=10)
    assert reload.status_code == 403, reload.text
    assert httpx.post(f"{url}/-/quit", timeout=10).status_code == 403
    snap = httpx.post(f"{url}/api/v1/admin/tsdb/snapshot", timeout=10)
    assert snap.status_code != 200 and "admin APIs disabled" in snap.text
    assert httpx.get(f"{url}/-/ready", timeout=10).status_code == 200


def test_prometheus_scrapes_secured_mlflow_as_the_reader(secured: Settings) -> None:
    """The mlflow target answers Prometheus (with the reader's login) although it needs one."""
    password_file = Path(secured.run_dir / "prometheus" / "mlflow-reader-password")
    assert password_file.stat().st_mode & 0o777 == 0o600
    deadline = time.monotonic() + 90
    health = None
    while time.monotonic() < deadline:
        r = httpx.get(f"{secured.prometheus_url}/api/v1/targets", timeout=10).json()
        jobs = [t for t in r["data"]["activeTargets"] if t["labels"].get("job") == "mlflow"]
        health = jobs[0]["health"] if jobs else None
        if health == "up":
            break
        time.sleep(2)
    assert health == "up", jobs
