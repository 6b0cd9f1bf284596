"""Settings: derived URLs, env overrides, and secrets refused outside local mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from secml.settings import LOCAL_SECRET, Settings


def test_urls_follow_ports_and_host(tmp_path: Path) -> None:
    s = Settings(run_dir=tmp_path, mlflow_port=5123, prefect_port=4321, host="127.0.0.1")
    assert s.mlflow_tracking_uri == "http://127.0.0.1:5123"
    assert s.prefect_api_url == "http://127.0.0.1:4321/api"
    assert s.store_url == f"sqlite:///{tmp_path / 'detections.db'}"


def test_explicit_url_wins(tmp_path: Path) -> None:
    s = Settings(run_dir=tmp_path, mlflow_tracking_uri="http://mlflow:5000")
    assert s.mlflow_tracking_uri == "http://mlflow:5000"


def test_env_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SECML_GATEWAY_PORT", "9999")
    s = Settings(run_dir=tmp_path)
    assert s.gateway_port == 9999
    assert s.gateway_url.endswith(":9999")


def test_production_refuses_default_secrets(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="SECML_GATEWAY_API_KEY"):
        Settings(run_dir=tmp_path, environment="production")
    keys = {"gateway_api_key": "k" * 24, "ui_password": "p" * 16}
    with pytest.raises(ValidationError, match="SECML_MLFLOW_PASSWORD"):
        Settings(run_dir=tmp_path, environment="production", **keys)
    servers = {"mlflow_password": "m" * 24, "prefect_api_auth_string": "u:" + "p" * 24}
    with pytest.raises(ValidationError, match="SECML_TRITON_ADMIN_KEY"):
        Settings(run_dir=tmp_path, environment="production", **keys, **servers)
    ok = Settings(
        run_dir=tmp_path, environment="production", triton_admin_key="t" * 24, **keys, **servers
    )
    assert ok.gateway_api_key.get_secret_value() != LOCAL_SECRET
    assert ok.prefect_basic_auth() == ("u", "p" * 24)
