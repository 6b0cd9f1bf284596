"""Generated local secrets, the MLflow read-only role, and what a secured stack passes on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from secml.settings import Settings
from secml.stack import child_env
from secml.stack import secrets as local_secrets
from secml.stack.preparation import mlflow_command, mlflow_env, prefect_server_env, triton_command
from secml.tracking_auth import is_read


def test_generated_secrets_differ_and_clients_match(tmp_path: Path) -> None:
    """Each secret is fresh; the clients' variables carry the same credentials."""
    a, b = local_secrets.generate(), local_secrets.generate()
    assert a["SECML_MLFLOW_PASSWORD"] != b["SECML_MLFLOW_PASSWORD"]
    assert len({a[k] for k in a if "PASSWORD" in k or "KEY" in k}) >= 5
    assert a["MLFLOW_TRACKING_PASSWORD"] == a["SECML_MLFLOW_PASSWORD"]
    assert a["PREFECT_API_AUTH_STRING"] == a["SECML_PREFECT_API_AUTH_STRING"]


def test_ensure_writes_once_owner_only(tmp_path: Path) -> None:
    path = local_secrets.ensure(tmp_path / "run")
    assert path.stat().st_mode & 0o777 == 0o600
    first = path.read_text()
    local_secrets.ensure(tmp_path / "run")
    assert path.read_text() == first
    assert set(local_secrets.read(tmp_path / "run")) >= {"SECML_MLFLOW_PASSWORD"}


def test_load_keeps_variables_already_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", os.environ.copy())  # nothing leaks to other tests
    local_secrets.ensure(tmp_path)
    monkeypatch.setenv("SECML_TRITON_ADMIN_KEY", "mine")
    monkeypatch.delenv("SECML_MLFLOW_PASSWORD", raising=False)
    found = local_secrets.load(tmp_path)
    assert os.environ["SECML_TRITON_ADMIN_KEY"] == "mine"
    assert os.environ["SECML_MLFLOW_PASSWORD"] == found["SECML_MLFLOW_PASSWORD"]
    assert local_secrets.read(tmp_path / "none") == {}


@pytest.mark.parametrize(
    ("method", "path", "read"),
    [
        ("GET", "/api/2.0/mlflow/experiments/get-by-name", True),
        ("POST", "/api/2.0/mlflow/runs/search", True),
        ("POST", "/api/2.0/mlflow/logged-models/search", True),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", True),
        ("POST", "/api/2.0/mlflow/experiments/create", False),
        ("POST", "/api/2.0/mlflow/registered-models/alias", False),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", False),
        ("PATCH", "/api/2.0/mlflow/registered-models/update", False),
        ("POST", "/api/2.0/mlflow/research/create", False),
    ],
)
def test_read_only_role_allows_reads_and_searches_only(method: str, path: str, read: bool) -> None:
    assert is_read(method, path) is read


def test_open_stack_has_no_auth_flags(tmp_path: Path) -> None:
    """Without secrets (the tests' own stacks) the servers start as before."""
    s = Settings(run_dir=tmp_path)
    assert "basic-auth" not in mlflow_command(s)
    assert "MLFLOW_AUTH_CONFIG_PATH" not in mlflow_env(s)
    assert "PREFECT_SERVER_API_AUTH_STRING" not in prefect_server_env(s)
    assert "--http-restricted-api" not in triton_command(s)
    assert "MLFLOW_TRACKING_PASSWORD" not in child_env(s)


def test_secured_stack_passes_credentials(tmp_path: Path) -> None:
    """With secrets: basic-auth app, Prefect auth, Triton's restricted API, client variables."""
    fields = {
        k.removeprefix("SECML_").lower(): v
        for k, v in local_secrets.generate().items()
        if k.startswith("SECML_")
    }
    s = Settings(run_dir=tmp_path, **fields)
    cmd = mlflow_command(s)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth"
    assert Path(mlflow_env(s)["MLFLOW_AUTH_CONFIG_PATH"]).parent == tmp_path / "mlflow"
    auth = fields["prefect_api_auth_string"]
    assert prefect_server_env(s)["PREFECT_SERVER_API_AUTH_STRING"] == auth
    cmd = triton_command(s)
    rule = cmd[cmd.index("--http-restricted-api") + 1]
    assert rule == f"model-repository:triton-admin-key={fields['triton_admin_key']}"
    env = child_env(s)
    assert env["MLFLOW_TRACKING_USERNAME"] == s.mlflow_username
    assert env["MLFLOW_TRACKING_PASSWORD"] == fields["mlflow_password"]
    assert env["PREFECT_API_AUTH_STRING"] == auth
