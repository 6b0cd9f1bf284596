"""Session fixtures that start the real servers once per test session, on free ports.

At import (before any test module imports Prefect or MLflow) the session's settings are
chosen: a temporary run directory and a free port for every service, exported as ``SECML_*``
plus ``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL`` and ``PREFECT_HOME`` so that
``get_settings()`` in the code under test sees them. Servers start lazily, the first time a
test asks for their fixture, through the same :class:`secml.stack.Stack` as ``make up``,
and all stop at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from secml.repository import copy_foundation
from secml.settings import ROOT, Settings, get_settings

_PORT_FIELDS = (
    "mlflow_port",
    "prefect_port",
    "prefect_exporter_port",
    "triton_http_port",
    "triton_grpc_port",
    "triton_metrics_port",
    "gateway_port",
    "ui_port",
    "kafka_port",
    "consumer_metrics_port",
    "sync_metrics_port",
    "prometheus_port",
)


def _configure_environment() -> Path:
    """Pick the session's run dir and ports and export them; returns the run dir."""
    from secml.stack import free_ports

    run_dir = Path(tempfile.mkdtemp(prefix="secml-test-"))
    env = {
        "SECML_RUN_DIR": str(run_dir),
        "SECML_ENVIRONMENT": "local",
        "SECML_TRITON_MODEL_REPOSITORY": str(run_dir / "triton_models"),
        "SECML_KAFKA_CONTROL_TOPIC": f"control-{uuid.uuid4().hex[:8]}",
    }
    for field, port in zip(_PORT_FIELDS, free_ports(len(_PORT_FIELDS)), strict=True):
        env[f"SECML_{field.upper()}"] = str(port)
    os.environ.update(env)
    get_settings.cache_clear()
    s = get_settings()
    os.environ["MLFLOW_TRACKING_URI"] = s.mlflow_tracking_uri or ""
    os.environ["PREFECT_API_URL"] = s.prefect_api_url or ""
    os.environ["PREFECT_HOME"] = str(run_dir / "prefect")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("MPLBACKEND", "Agg")
    return run_dir


_RUN_DIR = _configure_environment()


@pytest.fixture(scope="session")
def stack_settings() -> Settings:
    """The session's settings (temp run dir, free ports); no servers started."""
    return get_settings()


@pytest.fixture(scope="session")
def _stack(stack_settings: Settings) -> Iterator[object]:
    from secml.stack import Stack

    stack = Stack(stack_settings)
    yield stack
    stack.down(timeout_s=10)
    if os.environ.get("SECML_KEEP_TEST_RUN_DIR") != "1":
        shutil.rmtree(_RUN_DIR, ignore_errors=True)


def _service(stack: object, *names: str) -> None:
    from secml.stack import StackError

    try:
        stack.up(names)  # type: ignore[attr-defined]
    except StackError as exc:
        pytest.fail(f"could not start {', '.join(names)}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def mlflow_server(_stack: object, stack_settings: Settings) -> Settings:
    """A real MLflow server (SQLite, proxied artifacts)."""
    _service(_stack, "mlflow")
    return stack_settings


@pytest.fixture(scope="session")
def prefect_server(_stack: object, stack_settings: Settings) -> Settings:
    """A real Prefect server (SQLite under the run dir)."""
    _service(_stack, "prefect")
    return stack_settings


@pytest.fixture(scope="session")
def prefect_worker(prefect_server: Settings, mlflow_server: Settings, _stack: object) -> Settings:
    """The process work pool, every deployment in ``training.deploy.FLOWS``, and a worker."""
    _service(_stack, "prefect-worker")
    return prefect_server


@pytest.fixture(scope="session")
def triton_server(_stack: object, stack_settings: Settings) -> Settings:
    """Triton on a temporary copy of ``triton_models/`` (so model sync writes there)."""
    repo = stack_settings.triton_model_repository
    if not repo.exists():
        copy_foundation(ROOT / "triton_models", repo)
    _service(_stack, "triton")
    return stack_settings


@pytest.fixture(scope="session")
def kafka_broker(_stack: object, stack_settings: Settings) -> Settings:
    """A real Kafka-protocol broker (noida-db)."""
    _service(_stack, "kafka")
    return stack_settings


@pytest.fixture(scope="session")
def gateway_server(triton_server: Settings, mlflow_server: Settings, _stack: object) -> Settings:
    """The FastAPI gateway as a uvicorn process, in front of the session's Triton."""
    _service(_stack, "gateway")
    return triton_server


@pytest.fixture(scope="session")
def ui_server(_stack: object, stack_settings: Settings) -> Settings:
    """The Streamlit app as a process."""
    _service(_stack, "ui")
    return stack_settings


@pytest.fixture(scope="session")
def prometheus_server(_stack: object, stack_settings: Settings) -> Settings:
    """Prometheus scraping the session's services (file service discovery from settings)."""
    _service(_stack, "prometheus")
    return stack_settings


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's real PostgreSQL (127.0.0.1:5432), dropped afterwards."""
    import subprocess

    import sqlalchemy as sa

    admin_url = os.environ.get(
        "SECML_TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        conn = engine.connect()
    except sa.exc.OperationalError:
        versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
        if versions:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"],
                check=False,
                capture_output=True,
            )
        try:
            conn = engine.connect()
        except sa.exc.OperationalError as exc:
            pytest.fail(f"PostgreSQL is not reachable at {admin_url}: {exc}", pytrace=False)
    name = f"secml_test_{uuid.uuid4().hex[:10]}"
    with conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
