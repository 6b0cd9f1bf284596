"""Command lines the launcher builds to keep idle servers light (no server started here)."""

from __future__ import annotations

import subprocess
import sys

from secml.settings import Settings
from secml.stack.mlflow_server import MLFLOW_UNUSED, uvicorn_program
from secml.stack.preparation import (
    PREFECT_CHECK_S,
    PREFECT_SERVER,
    PREFECT_WORKER,
    prefect_server_command,
)


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_prefect_server_docket_worker_checks_less_often() -> None:
    """The patch in the Prefect server's command gives docket Workers the slower defaults;
    an explicit argument still wins."""
    patch = PREFECT_SERVER.split("sys.argv[0]")[0]
    probe = (
        "from datetime import timedelta\n"
        "from docket import Docket, Worker\n"
        "d = Docket(name='t', url='memory://')\n"
        "w = Worker(d)\n"
        "e = Worker(d, minimum_check_interval=timedelta(seconds=3))\n"
        "print(w.minimum_check_interval.total_seconds(), w.scheduling_resolution.total_seconds(),"
        " e.minimum_check_interval.total_seconds())\n"
    )
    assert _run(patch + probe) == f"{PREFECT_CHECK_S} {PREFECT_CHECK_S} 3.0"
    assert _run(probe).split()[:2] == ["0.25", "0.25"]  # docket's own default, for contrast


def test_prefect_server_command_runs_the_prefect_cli() -> None:
    """The command is the Prefect CLI's ``server start`` on the configured host and port."""
    s = Settings(prefect_port=4321)
    cmd = prefect_server_command(s)
    assert cmd[1] == "-c" and cmd[3:] == ["server", "start", "--host", s.host, "--port", "4321"]
    out = subprocess.run([*cmd[:3], "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip()[0].isdigit(), out.stdout + out.stderr


def test_mlflow_web_server_cannot_import_pyarrow_or_scipy() -> None:
    """The MLflow web server's program blocks pyarrow and scipy before uvicorn (and MLflow)
    import; MLflow's registry and server modules still import without them."""
    block = uvicorn_program(MLFLOW_UNUSED).split("sys.argv[0]")[0]
    code = block + (
        "import pandas\n"
        "from mlflow.server.fastapi_app import app\n"
        "import mlflow.models.utils as u\n"
        "for name in ('pyarrow', 'scipy'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError:\n"
        "        print(name, end=' ')\n"
        "print(u.HAS_SCIPY)\n"
    )
    assert _run(code).strip().splitlines()[-1] == "pyarrow scipy False"


def test_prefect_worker_finds_the_process_worker_without_the_integrations() -> None:
    """The worker's program resolves the built-in process worker without importing Prefect's
    integrations (prefect-dask: dask.distributed, numpy)."""
    preamble = PREFECT_WORKER.split("sys.argv[0]")[0]
    code = preamble + (
        "from prefect.cli._worker_utils import _load_worker_class\n"
        "print(_load_worker_class('process').__name__, "
        "sorted(m for m in ('numpy', 'distributed', 'prefect_dask') if m in sys.modules))\n"
    )
    assert _run(code).splitlines()[-1] == "ProcessWorker []"
