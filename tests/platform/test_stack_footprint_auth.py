"""Issue 17 against real servers started as ``make up`` starts them (generated secrets):

- Triton's model-repository API (index, load, unload) needs the admin key over gRPC too; the
  sync's loads and the gateway's index reads send it; inference stays open.
- Idle servers hold only what they use: MLflow's web server without pyarrow, Triton's idle
  stubs without xgboost/scipy (ABP) or torch (DFP) until a model is synced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from secml.repository import copy_foundation
from secml.settings import ROOT, Settings
from secml.stack import Stack, StackError, free_ports, tree_pids
from secml.stack import secrets as local_secrets
from serving.sync import TritonRepo
from serving.triton import GRPC_ADMIN_KEY

pytestmark = pytest.mark.integration

PORTS = (
    "mlflow_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
    "gateway_port",
)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Stack]]:
    """MLflow, Triton (a copy of triton_models/) and the gateway with generated secrets."""
    run_dir = tmp_path_factory.mktemp("locked")
    local_secrets.ensure(run_dir)
    found = local_secrets.read(run_dir)
    secret = {k.removeprefix("SECML_").lower(): v for k, v in found.items() if "SECML_" in k}
    ports = dict(zip(PORTS, free_ports(len(PORTS), 10000, 14999), strict=True))
    repo = run_dir / "triton_models"
    copy_foundation(ROOT / "triton_models", repo)
    s = Settings(run_dir=run_dir, triton_model_repository=repo, **ports, **secret)
    stack = Stack(s)
    try:
        stack.up(["mlflow", "triton", "gateway"])
    except StackError as exc:
        stack.down()
        pytest.fail(f"could not start the servers: {exc}", pytrace=False)
    yield s, stack
    stack.down(timeout_s=10)


def _key(s: Settings) -> str:
    assert s.triton_admin_key is not None
    return s.triton_admin_key.get_secret_value()


def _refused(call: object) -> str:
    """The message of a call Triton refuses (fails the test if it is accepted)."""
    with pytest.raises(InferenceServerException) as err:
        call()  # type: ignore[operator]
    return str(err.value.message())


def test_grpc_repository_api_needs_the_admin_key(secured: tuple[Settings, Stack]) -> None:
    """Anonymous (or wrong-key) index/load/unload over gRPC is refused and changes nothing."""
    s, _ = secured
    client = grpcclient.InferenceServerClient(s.triton_grpc_url or "")
    try:
        assert client.is_model_ready("echo")
        for call in (
            lambda: client.get_model_repository_index(),
            lambda: client.unload_model("echo"),
            lambda: client.load_model("echo"),
            lambda: client.unload_model("echo", headers={GRPC_ADMIN_KEY: "wrong"}),
            # the HTTP header name is not the gRPC one
            lambda: client.unload_model("echo", headers={"triton-admin-key": _key(s)}),
        ):
            assert "restricted" in _refused(call)
        time.sleep(0.5)
        assert client.is_model_ready("echo")  # nothing was unloaded
        index = client.get_model_repository_index(headers={GRPC_ADMIN_KEY: _key(s)})
        assert {m.name for m in index.models} >= {"echo", "abp_nvsmi_xgb", "dfp"}
        # inference stays open
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        inp = grpcclient.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("echo", [inp]).as_numpy("OUTPUT")
        assert np.array_equal(out, x)
    finally:
        client.close()


def test_sync_loads_with_the_key(secured: tuple[Settings, Stack]) -> None:
    """The sync's repository client (its admin headers) unloads nothing by accident and loads
    over gRPC; its HTTP index read works too; without the key the same load is refused."""
    s, _ = secured
    repo = TritonRepo(s.triton_url or "", s.triton_grpc_url or "", admin_key=_key(s))
    anon = TritonRepo(s.triton_url or "", s.triton_grpc_url or "")
    try:
        repo.load("echo")
        assert repo.states("echo") == {1: "READY"}
        with pytest.raises(Exception, match="restricted"):
            anon.load("echo")
        with pytest.raises(httpx.HTTPStatusError):
            anon.states("echo")
    finally:
        repo.close()
        anon.close()


def test_gateway_reads_the_index_with_the_key(secured: tuple[Settings, Stack]) -> None:
    """/ready and /models list Triton's models: the gateway's gRPC index read is authorised."""
    s, _ = secured
    ready = httpx.get(f"{s.gateway_url}/ready", timeout=10)
    assert ready.status_code == 200, ready.text
    assert {"echo", "abp_nvsmi_xgb", "dfp"} <= set(ready.json()["models"])
    models = httpx.get(f"{s.gateway_url}/models", timeout=10)
    assert models.status_code == 200
    assert {"echo", "dfp"} <= {m["name"] for m in models.json()["triton"]}


def _mapped(pid: int) -> str:
    """Every file mapped into ``pid`` (its shared libraries), as one text."""
    return Path(f"/proc/{pid}/maps").read_text()


def _stub(stack: Stack, model: str) -> int:
    """The PID of Triton's python-backend stub serving ``model``."""
    for pid in tree_pids(stack.pid("triton") or 0):
        if f"/{model}/1/model.py" in Path(f"/proc/{pid}/cmdline").read_bytes().decode():
            return pid
    raise AssertionError(f"no stub process for {model}")


def test_idle_servers_load_only_what_they_use(secured: tuple[Settings, Stack]) -> None:
    """MLflow's web server maps no pyarrow; unsynced Triton stubs map no xgboost, scipy or
    torch, and still answer (NOT_SYNCED) through the gateway's model error path."""
    s, stack = secured
    mlflow = _mapped(stack.pid("mlflow") or 0)
    assert "site-packages/mlflow" in mlflow or "sqlalchemy" in mlflow
    assert "site-packages/pyarrow" not in mlflow
    abp = _mapped(_stub(stack, "abp_nvsmi_xgb"))
    assert "site-packages/numpy" in abp
    assert "site-packages/xgboost" not in abp and "site-packages/scipy" not in abp
    assert "libtorch" not in _mapped(_stub(stack, "dfp"))
    client = grpcclient.InferenceServerClient(s.triton_grpc_url or "")
    try:
        x = np.zeros((1, 18), dtype=np.float32)
        inp = grpcclient.InferInput("FEATURES", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        assert "NOT_SYNCED" in _refused(lambda: client.infer("abp_nvsmi_xgb", [inp]))
    finally:
        client.close()
    # MLflow still answers its API (a write as the writer, with auth)
    assert s.mlflow_password is not None
    auth = (s.mlflow_username, s.mlflow_password.get_secret_value())
    api = f"{s.mlflow_tracking_uri}/api/2.0/mlflow"
    made = httpx.post(f"{api}/experiments/create", json={"name": "footprint"}, auth=auth)
    assert made.status_code == 200, made.text


def test_exporter_reads_the_secured_registry_as_the_reader(
    secured: tuple[Settings, Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exporter's REST registry client logs in with MLFLOW_TRACKING_USERNAME/PASSWORD (the
    read-only account works); without them MLflow's 401 is raised with the URL."""
    from training.prefect_exporter import RegistryRest

    s, _ = secured
    assert s.mlflow_password is not None and s.mlflow_reader_password is not None
    writer = (s.mlflow_username, s.mlflow_password.get_secret_value())
    api = f"{s.mlflow_tracking_uri}/api/2.0/mlflow"
    name = "abp-footprint-check"
    made = httpx.post(f"{api}/registered-models/create", json={"name": name}, auth=writer)
    assert made.status_code == 200, made.text
    version = httpx.post(
        f"{api}/model-versions/create",
        json={"name": name, "source": "s3://secml-test/model"},
        auth=writer,
    )
    assert version.status_code == 200, version.text
    alias = {"name": name, "alias": "production", "version": "1"}
    assert httpx.post(f"{api}/registered-models/alias", json=alias, auth=writer).status_code == 200

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", s.mlflow_reader_username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", s.mlflow_reader_password.get_secret_value())
    page = RegistryRest(s.mlflow_tracking_uri or "").search_registered_models(100, None)
    assert {m.name: m.aliases for m in page}[name] == {"production": "1"}
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(RuntimeError, match="answered 401"):
        RegistryRest(s.mlflow_tracking_uri or "").search_registered_models(100, None)
