"""What the local servers need before they start: files on disk, environments, command lines.

Triton's python backend copied out of the ``nvidia-pytriton`` wheel, MLflow's directories,
Prefect's environment and deployments, Prometheus's config and file-SD targets.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from secml.settings import ROOT, Settings
from secml.stack.processes import VENV_BIN, child_env

log = logging.getLogger(__name__)


TRITON_ADMIN_HEADER = "triton-admin-key"


class StackError(RuntimeError):
    """A service could not be started; the message says which and what to do."""


def triton_paths(s: Settings) -> tuple[Path, Path]:
    """(tritonserver binary, backend directory prepared under run_dir)."""
    site = Path(
        sysconfig.get_path(
            "purelib", vars={"base": str(s.triton_venv), "platbase": str(s.triton_venv)}
        )
    )
    return (
        site / "pytriton" / "tritonserver" / "bin" / "tritonserver",
        s.run_dir / "triton" / "backends",
    )


def prepare_triton(s: Settings) -> None:
    """Copy the python backend and the 3.11 stub out of the nvidia-pytriton wheel."""
    binary, backends = triton_paths(s)
    if not binary.exists():
        raise StackError(
            f"tritonserver not found at {binary}: run `make install` "
            f"(creates {s.triton_venv} with nvidia-pytriton)"
        )
    wheel = binary.parent.parent
    dest = backends / "python"
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(wheel / "backends" / "python" / f, dest / f)
    stub = dest / "python_backend_stubs" / "3.11"
    stub.mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel / "python_backend_stubs" / "3.11" / "triton_python_backend_stub", stub)
    # the python backend looks for the stub next to libtriton_python.so
    shutil.copy2(stub / "triton_python_backend_stub", dest / "triton_python_backend_stub")
    s.triton_model_repository.mkdir(parents=True, exist_ok=True)


def triton_command(s: Settings) -> list[str]:
    binary, backends = triton_paths(s)
    return [
        str(binary),
        "--model-repository",
        str(s.triton_model_repository),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "*",
        "--backend-directory",
        str(backends),
        "--http-address",
        s.host,
        "--http-port",
        str(s.triton_http_port),
        "--grpc-address",
        s.host,
        "--grpc-port",
        str(s.triton_grpc_port),
        "--metrics-address",
        s.host,
        "--metrics-port",
        str(s.triton_metrics_port),
        "--exit-on-error",
        "false",
        "--allow-metrics",
        "true",
        "--log-verbose",
        "0",
        *triton_restricted(s),
    ]


def triton_restricted(s: Settings) -> list[str]:
    """With ``triton_admin_key``: the model-repository API (load, unload, index) needs that key
    in the ``triton-admin-key`` header over HTTP and in the same gRPC metadata key over gRPC.

    The sync sends it with its loads; the gateway with its repository-index reads (readiness,
    /models). Inference, health and metadata stay open on the local address.
    """
    if s.triton_admin_key is None:
        return []
    rule = f"model-repository:{TRITON_ADMIN_HEADER}={s.triton_admin_key.get_secret_value()}"
    return ["--http-restricted-api", rule, "--grpc-restricted-protocol", rule]


def triton_env(s: Settings) -> dict[str, str]:
    libdir = sysconfig.get_config_var("LIBDIR")
    binary, _ = triton_paths(s)
    libs = binary.parent.parent.parent.parent / "nvidia_pytriton.libs"
    return {
        "LD_LIBRARY_PATH": f"{libdir}:{libs}",
        "PATH": f"{s.triton_venv / 'bin'}:{os.environ.get('PATH', '')}",
    }


def prepare_mlflow(s: Settings) -> None:
    """Directories, and with ``mlflow_password`` set the basic-auth config (owner-only file)."""
    (s.run_dir / "mlflow" / "metrics").mkdir(parents=True, exist_ok=True)
    Path(s.mlflow_artifacts_destination or "").mkdir(parents=True, exist_ok=True)
    if s.mlflow_password is None:
        return
    ini = _mlflow_auth_ini(s)
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{s.run_dir / 'mlflow' / 'auth.db'}\n"
        f"admin_username = {s.mlflow_username}\n"
        f"admin_password = {s.mlflow_password.get_secret_value()}\n"
        "authorization_function = secml.tracking_auth:authenticate\n"
        # one worker, so password/user changes through the API evict at once; without the cache
        # every request pays a scrypt check (~0.1 s of CPU: each 10 s scrape alone was ~1%)
        "auth_cache_ttl_seconds = 300\n"
    )
    ini.chmod(0o600)


def _mlflow_auth_ini(s: Settings) -> Path:
    return s.run_dir / "mlflow" / "auth.ini"


def mlflow_command(s: Settings) -> list[str]:
    """``mlflow server`` (light: one worker, no job runner, no idle parent process:
    :mod:`secml.stack.mlflow_server`); the basic-auth app when secured."""
    auth = ["--app-name", "basic-auth"] if s.mlflow_password is not None else []
    return [
        str(VENV_BIN / "python"),
        "-m",
        "secml.stack.mlflow_server",
        *auth,
        "--backend-store-uri",
        s.mlflow_backend_store_uri or "",
        "--artifacts-destination",
        s.mlflow_artifacts_destination or "",
        "--host",
        s.host,
        "--port",
        str(s.mlflow_port),
        "--workers",
        "1",
        "--expose-prometheus",
        str(s.run_dir / "mlflow" / "metrics"),
    ]


def mlflow_env(s: Settings) -> dict[str, str]:
    """No job runner; with auth, the auth config and the CSRF key."""
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    if s.mlflow_password is not None:
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(_mlflow_auth_ini(s))
        key = s.mlflow_flask_secret_key or s.mlflow_password
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = key.get_secret_value()
        # Routes MLflow has no rule for (/metrics) would be admin-only; open them to logged-in
        # accounts so Prometheus scrapes as the reader. Non-admin writes stay refused by
        # secml.tracking_auth.
        env["MLFLOW_BASIC_AUTH_FAIL_CLOSED"] = "false"
    return env


def mlflow_started(s: Settings) -> None:
    """With auth: create the read-only account (``mlflow_reader_*``) unless it exists."""
    if s.mlflow_password is None or s.mlflow_reader_password is None:
        return
    import httpx

    r = httpx.post(
        f"{s.mlflow_tracking_uri}/api/2.0/mlflow/users/create",
        json={
            "username": s.mlflow_reader_username,
            "password": s.mlflow_reader_password.get_secret_value(),
        },
        auth=(s.mlflow_username, s.mlflow_password.get_secret_value()),
        timeout=10,
    )
    if r.status_code != 200 and "RESOURCE_ALREADY_EXISTS" not in r.text:
        raise StackError(f"creating the MLflow reader account failed: {r.status_code} {r.text}")


def prefect_env(s: Settings) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(s.run_dir / "prefect"),
        "PREFECT_API_URL": s.prefect_api_url or "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }


def prefect_server_env(s: Settings) -> dict[str, str]:
    """The Prefect server's environment: with ``prefect_api_auth_string``, API auth on.

    Idle cost: services the platform never uses are off (automations' triggers, which
    re-evaluate every 5 s; pause expirations: no flow pauses), and 5 s loops with nothing to do
    locally run less often (no deployment has a schedule; worker-cleanup leases are rare).
    """
    env = prefect_env(s) | {
        "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "60",
        "PREFECT_SERVER_SERVICES_CLEANUP_RECONCILER_LOOP_SECONDS": "30",
        "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "15",  # = its after_seconds
    }
    if s.prefect_api_auth_string is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = s.prefect_api_auth_string.get_secret_value()
    return env


PREFECT_CHECK_S = 1.0
# ``prefect server start`` with its docket worker (which runs the server's services and
# background tasks, in memory locally) checking for due tasks every PREFECT_CHECK_S seconds
# instead of every 250 ms: that polling alone was ~0.5% of a core on an idle server. A task
# that falls due starts at most PREFECT_CHECK_S later; flow runs are picked up by the worker's
# own polling, which this does not change.
PREFECT_SERVER = (
    "import sys\n"
    "from datetime import timedelta\n"
    "import docket.worker\n"
    "init = docket.worker.Worker.__init__\n"
    "def slower(self, *args, **kw):\n"
    "    for name in ('minimum_check_interval', 'scheduling_resolution'):\n"
    f"        kw.setdefault(name, timedelta(seconds={PREFECT_CHECK_S}))\n"
    "    init(self, *args, **kw)\n"
    "docket.worker.Worker.__init__ = slower\n"
    "sys.argv[0] = 'prefect'\n"
    "from prefect.cli import app\n"
    "sys.exit(app())\n"
)


def _prefect_cli(program: str, *args: str) -> list[str]:
    """The Prefect CLI with ``args``, run by ``program`` (a ``python -c`` preamble + the CLI)."""
    return [str(VENV_BIN / "python"), "-c", program, *args]


def prefect_server_command(s: Settings) -> list[str]:
    """``prefect server start`` on host:port, its idle polling slowed (:data:`PREFECT_SERVER`)."""
    return _prefect_cli(
        PREFECT_SERVER, "server", "start", "--host", s.host, "--port", str(s.prefect_port)
    )


# ``prefect worker start --type process`` without Prefect's integrations: to find a worker
# class the CLI imports every installed ``prefect.collections`` entry point, and prefect-dask's
# pulls in dask.distributed and numpy (~28 MiB of the idle worker's RSS) although the process
# worker is built in. Marking the collections as already loaded (none) skips that; flow runs
# start in their own interpreters and import what their code asks for.
PREFECT_WORKER = (
    "import sys\n"
    "import prefect._internal.plugins.collections as collections\n"
    "collections._collections = {}\n"
    "import prefect.workers.process\n"
    "sys.argv[0] = 'prefect'\n"
    "from prefect.cli import app\n"
    "sys.exit(app())\n"
)


def prefect_worker_command(s: Settings) -> list[str]:
    """A process worker polling ``prefect_work_pool`` (:data:`PREFECT_WORKER`)."""
    return _prefect_cli(
        PREFECT_WORKER, "worker", "start", "--pool", s.prefect_work_pool, "--type", "process"
    )


def prepare_worker(s: Settings) -> None:
    """Register the work pool and every deployment before the worker polls."""
    env = child_env(s) | prefect_env(s)
    out = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "training.deploy"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logfile = s.run_dir / "logs" / "deploy.log"
    logfile.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise StackError(f"deploying the Prefect flows failed; see {logfile}")


def prepare_prometheus(s: Settings) -> None:
    """Copy the config and rules under run_dir and write file-SD targets from settings."""
    if shutil.which("prometheus") is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log.info("prometheus missing: installing it from Debian's packages")
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"],
                check=False,
                capture_output=True,
                timeout=600,
                env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
            )
        if shutil.which("prometheus") is None:
            raise StackError(
                "prometheus is not installed: run `sudo apt-get install -y "
                "--no-install-recommends prometheus` (Debian/Ubuntu) and `make up` again"
            )
    dest = s.run_dir / "prometheus"
    (dest / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "monitoring" / "prometheus.yml", dest / "prometheus.yml")
    if (ROOT / "monitoring" / "rules").is_dir():
        shutil.copytree(ROOT / "monitoring" / "rules", dest / "rules", dirs_exist_ok=True)
    from secml import monitoring

    monitoring.write_local_targets(s, dest / "targets")
    _scrape_mlflow_login(s, dest)


def _scrape_mlflow_login(s: Settings, dest: Path) -> None:
    """MLflow's /metrics needs a login once secured: scrape as the read-only account (its
    password in an owner-only file under run_dir); with MLflow open, scrape without one."""
    import yaml

    config = yaml.safe_load((dest / "prometheus.yml").read_text())
    secured = s.mlflow_password is not None and s.mlflow_reader_password is not None
    secret = dest / "mlflow-reader-password"
    if secured:
        secret.write_text(s.mlflow_reader_password.get_secret_value())  # type: ignore[union-attr]
        secret.chmod(0o600)
    for job in config.get("scrape_configs", []):
        if job.get("job_name") != "mlflow":
            continue
        job.pop("basic_auth", None)
        if secured:
            job["basic_auth"] = {"username": s.mlflow_reader_username, "password_file": str(secret)}
    (dest / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
