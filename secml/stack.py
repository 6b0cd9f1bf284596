"""The local launcher: start, check, list and stop the platform's servers as local processes.

``make up`` / ``make down`` / ``make status`` / ``make logs`` call this module, and the test
fixtures use the same :class:`Stack` on free ports, so services are defined in one place.
Each process starts in its own session; its PID and start time go under ``<run_dir>/pids`` and
its output under ``<run_dir>/logs``. ``down`` stops exactly those processes (their process
groups) and nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from secml.settings import ROOT, Settings, get_settings

log = logging.getLogger(__name__)

VENV_BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    """A service could not be started; the message says which and what to do."""


@dataclass(frozen=True)
class Service:
    """One local server: how to start it and how to know it answers."""

    name: str
    ports: tuple[str, ...]  # settings fields holding the ports it binds; the first is its main port
    url: Callable[[Settings], str]
    command: Callable[[Settings], list[str]]
    ready: Callable[[Settings], bool]
    env: Callable[[Settings], dict[str, str]] = field(default=lambda s: {})
    prepare: Callable[[Settings], None] | None = None
    after: tuple[str, ...] = ()  # services that must be ready before this one starts
    startup_timeout_s: float = 120.0
    stop_signal: int = signal.SIGTERM  # what asks it to stop (SIGKILL follows after a grace)


# ---------------------------------------------------------------- health checks


def _get(url: str, timeout: float = 2.0, **kw: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=timeout, **kw)  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


def mlflow_ready(s: Settings) -> bool:
    """True when the MLflow server at ``s.mlflow_tracking_uri`` answers an API call."""
    r = _get(
        f"{s.mlflow_tracking_uri}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "Default"},
    )
    return r is not None and r.status_code == 200 and "experiment" in r.text


def _prefect_ready(s: Settings) -> bool:
    r = _get(f"{s.prefect_api_url}/health")
    return r is not None and r.status_code == 200 and r.text.strip() == "true"


def _worker_ready(s: Settings) -> bool:
    try:
        r = httpx.post(
            f"{s.prefect_api_url}/work_pools/{s.prefect_work_pool}/workers/filter",
            json={},
            timeout=2.0,
        )
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and any(w.get("status") == "ONLINE" for w in r.json())


def _triton_ready(s: Settings) -> bool:
    meta = _get(f"http://{s.triton_url}/v2")
    ready = _get(f"http://{s.triton_url}/v2/health/ready")
    return (
        meta is not None
        and meta.status_code == 200
        and meta.json().get("name") == "triton"
        and ready is not None
        and ready.status_code == 200
    )


def _gateway_ready(s: Settings) -> bool:
    r = _get(f"{s.gateway_url}/health")
    return r is not None and r.status_code == 200 and "status" in r.text


def _ui_ready(s: Settings) -> bool:
    r = _get(f"{s.ui_url}/_stcore/health")
    return r is not None and r.status_code == 200 and r.text.strip() == "ok"


def _kafka_ready(s: Settings) -> bool:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=s.kafka_bootstrap_servers, request_timeout_ms=3000
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _prometheus_ready(s: Settings) -> bool:
    r = _get(f"{s.prometheus_url}/-/ready")
    return r is not None and r.status_code == 200 and "Prometheus" in r.text


def _metrics_ready(port_field: str, marker: str) -> Callable[[Settings], bool]:
    def check(s: Settings) -> bool:
        r = _get(f"http://{s.host}:{getattr(s, port_field)}/metrics")
        return r is not None and r.status_code == 200 and marker in r.text

    return check


# ---------------------------------------------------------------- commands


def _triton_paths(s: Settings) -> tuple[Path, Path]:
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


def _prepare_triton(s: Settings) -> None:
    """Copy the python backend and the 3.11 stub out of the nvidia-pytriton wheel."""
    binary, backends = _triton_paths(s)
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


def _triton_command(s: Settings) -> list[str]:
    binary, backends = _triton_paths(s)
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
    ]


def _triton_env(s: Settings) -> dict[str, str]:
    libdir = sysconfig.get_config_var("LIBDIR")
    binary, _ = _triton_paths(s)
    libs = binary.parent.parent.parent.parent / "nvidia_pytriton.libs"
    return {
        "LD_LIBRARY_PATH": f"{libdir}:{libs}",
        "PATH": f"{s.triton_venv / 'bin'}:{os.environ.get('PATH', '')}",
    }


def _prepare_mlflow(s: Settings) -> None:
    (s.run_dir / "mlflow" / "metrics").mkdir(parents=True, exist_ok=True)
    Path(s.mlflow_artifacts_destination or "").mkdir(parents=True, exist_ok=True)


def _prefect_env(s: Settings) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(s.run_dir / "prefect"),
        "PREFECT_API_URL": s.prefect_api_url or "",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }


def _prepare_worker(s: Settings) -> None:
    """Register the work pool and every deployment before the worker polls."""
    env = child_env(s) | _prefect_env(s)
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


def _prepare_prometheus(s: Settings) -> None:
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


def _py(*args: str) -> Callable[[Settings], list[str]]:
    return lambda s: [str(VENV_BIN / "python"), *args]


SERVICES: tuple[Service, ...] = (
    Service(
        "mlflow",
        ("mlflow_port",),
        lambda s: s.mlflow_tracking_uri or "",
        lambda s: [
            str(VENV_BIN / "mlflow"),
            "server",
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
        ],
        mlflow_ready,
        env=lambda s: {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        prepare=_prepare_mlflow,
    ),
    Service(
        "prefect",
        ("prefect_port",),
        lambda s: (s.prefect_api_url or "").removesuffix("/api"),
        lambda s: [
            str(VENV_BIN / "prefect"),
            "server",
            "start",
            "--host",
            s.host,
            "--port",
            str(s.prefect_port),
        ],
        _prefect_ready,
        env=_prefect_env,
    ),
    Service(
        "triton",
        ("triton_http_port", "triton_grpc_port", "triton_metrics_port"),
        lambda s: f"http://{s.triton_url}",
        _triton_command,
        _triton_ready,
        env=_triton_env,
        prepare=_prepare_triton,
    ),
    Service(
        "kafka",
        ("kafka_port",),
        lambda s: f"kafka://{s.kafka_bootstrap_servers}",
        lambda s: [
            str(VENV_BIN / "noida-db"),
            "start",
            "--only",
            "kafka",
            "--host",
            s.host,
            "--kafka-port",
            str(s.kafka_port),
            "--data-dir",
            str(s.run_dir / "kafka"),
        ],
        _kafka_ready,
    ),
    Service(
        "gateway",
        ("gateway_port",),
        lambda s: s.gateway_url or "",
        lambda s: [
            str(VENV_BIN / "uvicorn"),
            "serving.app:app",
            "--host",
            s.host,
            "--port",
            str(s.gateway_port),
            "--no-access-log",
        ],
        _gateway_ready,
    ),
    Service(
        "ui",
        ("ui_port",),
        lambda s: s.ui_url or "",
        lambda s: [
            str(VENV_BIN / "streamlit"),
            "run",
            str(ROOT / "ui" / "app.py"),
            "--server.address",
            s.host,
            "--server.port",
            str(s.ui_port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--client.toolbarMode",
            "viewer",
        ],
        _ui_ready,
    ),
    Service(
        "prefect-worker",
        (),
        lambda s: f"pool {s.prefect_work_pool}",
        lambda s: [
            str(VENV_BIN / "prefect"),
            "worker",
            "start",
            "--pool",
            s.prefect_work_pool,
            "--type",
            "process",
        ],
        _worker_ready,
        env=_prefect_env,
        prepare=_prepare_worker,
        after=("prefect",),
        stop_signal=signal.SIGINT,  # the worker stops promptly on SIGINT
    ),
    Service(
        "consumer",
        ("consumer_metrics_port",),
        lambda s: f"http://{s.host}:{s.consumer_metrics_port}/metrics",
        _py("-m", "training.consumer"),
        _metrics_ready("consumer_metrics_port", "consumer_messages_consumed_total"),
        env=_prefect_env,
        after=("kafka", "prefect"),
    ),
    Service(
        "prefect-exporter",
        ("prefect_exporter_port",),
        lambda s: f"http://{s.host}:{s.prefect_exporter_port}/metrics",
        _py("-m", "training.prefect_exporter"),
        _metrics_ready("prefect_exporter_port", "prefect_flow_runs"),
        env=_prefect_env,
        after=("prefect",),
    ),
    Service(
        "prometheus",
        ("prometheus_port",),
        lambda s: s.prometheus_url or "",
        lambda s: [
            "prometheus",
            "--config.file",
            str(s.run_dir / "prometheus" / "prometheus.yml"),
            "--storage.tsdb.path",
            str(s.run_dir / "prometheus" / "data"),
            "--web.listen-address",
            f"{s.host}:{s.prometheus_port}",
            "--web.enable-lifecycle",
        ],
        _prometheus_ready,
        prepare=_prepare_prometheus,
    ),
)
BY_NAME = {svc.name: svc for svc in SERVICES}


def _available(svc: Service) -> bool:
    """Whether the code a service runs exists in this checkout (lets later issues add services)."""
    module = {
        "gateway": "serving/app.py",
        "ui": "ui/app.py",
        "consumer": "training/consumer.py",
        "prefect-exporter": "training/prefect_exporter.py",
        "prometheus": "monitoring/prometheus.yml",
    }.get(svc.name)
    return module is None or (ROOT / module).exists()


def child_env(s: Settings) -> dict[str, str]:
    """The environment every child gets: this process's, plus every setting as ``SECML_*``."""
    env = dict(os.environ)
    for name, value in s.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"SECML_{name.upper()}"] = str(value)
    env["MLFLOW_TRACKING_URI"] = s.mlflow_tracking_uri or ""
    env["PREFECT_API_URL"] = s.prefect_api_url or ""
    env["PYTHONUNBUFFERED"] = "1"
    return env


# ---------------------------------------------------------------- process bookkeeping


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against PID reuse), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class ServiceState:
    """A row of the status table."""

    name: str
    url: str
    state: str
    pid: int | None = None
    rss_mb: float = 0.0


class Stack:
    """The set of local services for one ``Settings`` (one run directory)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.pid_dir = self.settings.run_dir / "pids"
        self.log_dir = self.settings.run_dir / "logs"

    # -- bookkeeping
    def pid(self, name: str) -> int | None:
        """The PID of our running ``name`` process, or None (stale files are removed)."""
        path = self.pid_dir / f"{name}.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if _start_time(info["pid"]) != info["start_time"]:
            path.unlink(missing_ok=True)
            return None
        return int(info["pid"])

    def _spawn(self, svc: Service) -> int:
        s = self.settings
        for fld in svc.ports:
            port = getattr(s, fld)
            if not port_free(s.host, port):
                raise StackError(
                    f"port {port} ({svc.name}) is in use by another program: "
                    f"stop it or set SECML_{fld.upper()} to move {svc.name}"
                )
        if svc.prepare:
            svc.prepare(s)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_dir / f"{svc.name}.log", "ab")  # noqa: SIM115  (owned by the child)
        cmd = svc.command(s)
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=child_env(s) | svc.env(s),
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        logf.close()
        self.record(svc.name, proc.pid, cmd)
        log.info("started %s (pid %d)", svc.name, proc.pid)
        return proc.pid

    def record(self, name: str, pid: int, cmd: list[str]) -> None:
        """Remember ``pid`` (with its start time) as our ``name`` process: ``down`` stops it."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        (self.pid_dir / f"{name}.json").write_text(
            json.dumps({"pid": pid, "start_time": _start_time(pid), "cmd": cmd})
        )

    def _wait_ready(self, svc: Service) -> None:
        deadline = time.monotonic() + svc.startup_timeout_s
        while time.monotonic() < deadline:
            if svc.ready(self.settings):
                return
            if self.pid(svc.name) is None:
                raise StackError(
                    f"{svc.name} exited during start-up; see {self.log_dir / (svc.name + '.log')}"
                )
            time.sleep(0.5)
        raise StackError(
            f"{svc.name} did not answer its health check within "
            f"{svc.startup_timeout_s:.0f}s; see {self.log_dir / (svc.name + '.log')}"
        )

    # -- public
    def up(self, names: Iterable[str] | None = None) -> list[ServiceState]:
        """Start the named services (default: all available), leaving running ones alone."""
        wanted = [BY_NAME[n] for n in names] if names else [s for s in SERVICES if _available(s)]
        finished = {svc.name: threading.Event() for svc in wanted}
        failed: dict[str, str] = {}

        def start(svc: Service) -> None:
            for dep in svc.after:
                if dep in finished:
                    finished[dep].wait()
                    if dep in failed:
                        failed[svc.name] = f"{svc.name} not started: {dep} failed"
                        finished[svc.name].set()
                        return
            err = self._ensure_one(svc)
            if err:
                failed[svc.name] = err
            finished[svc.name].set()

        with ThreadPoolExecutor(max_workers=len(wanted) or 1) as pool:
            list(pool.map(start, wanted))
        if failed:
            raise StackError("\n".join(failed[s.name] for s in wanted if s.name in failed))
        return self.status(wanted)

    def _ensure_one(self, svc: Service) -> str | None:
        """Start ``svc`` unless ours is already running, then wait until ready; return an error."""
        try:
            if self.pid(svc.name) is None:
                self._spawn(svc)
            else:
                log.info("%s already running (pid %s)", svc.name, self.pid(svc.name))
            self._wait_ready(svc)
        except StackError as exc:
            return str(exc)
        return None

    def status(self, services: Iterable[Service] | None = None) -> list[ServiceState]:
        """The state of each service: ready, not ready, stopped, or not ours."""
        rows = []
        for svc in services or SERVICES:
            pid = self.pid(svc.name)
            if pid is None:
                state = "stopped" if _available(svc) else "not built yet"
            else:
                state = "ready" if svc.ready(self.settings) else "not ready"
            rows.append(
                ServiceState(svc.name, svc.url(self.settings), state, pid, group_rss_mb(pid))
            )
        return rows

    def down(self, names: Iterable[str] | None = None, timeout_s: float = 3.0) -> list[str]:
        """Stop our processes (their process groups) at once; return the names stopped.

        Every service is asked to stop (``stop_signal``) in parallel, except that one another
        service starts ``after`` is asked once those are gone (the consumer before the broker,
        the worker before Prefect), or at ``timeout_s / 2`` at the latest. A group still alive
        ``timeout_s`` after the start is killed (SIGKILL). Only groups led by the PIDs under
        ``pids/`` (with their recorded start time) are touched.
        """
        wanted = [BY_NAME[n] for n in names] if names else list(SERVICES)
        ours = {svc.name: (svc, pid) for svc in wanted if (pid := self.pid(svc.name)) is not None}
        gone = {name: threading.Event() for name in ours}
        start = time.monotonic()

        def stop(name: str) -> None:
            svc, pid = ours[name]
            for dependent in (n for n, (d, _) in ours.items() if name in d.after):
                gone[dependent].wait(max(0.0, start + timeout_s / 2 - time.monotonic()))
            _terminate_group(pid, start + timeout_s - time.monotonic(), svc.stop_signal)
            (self.pid_dir / f"{name}.json").unlink(missing_ok=True)
            log.info("stopped %s (pid %d)", name, pid)
            gone[name].set()

        with ThreadPoolExecutor(max_workers=len(ours) or 1) as pool:
            list(pool.map(stop, ours))
        return [svc.name for svc in reversed(wanted) if svc.name in ours]


def group_stats(pgid: int) -> Iterator[list[str]]:
    """``/proc/<pid>/stat`` of every live process in process group ``pgid``, split after the
    command name (so index 0 is the state, 2 the group, 11/12 user/system ticks, 21 the RSS)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            yield fields


def group_rss_mb(pgid: int | None) -> float:
    """Resident memory (MiB) of every process in the process group ``pgid``."""
    if pgid is None:
        return 0.0
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(int(f[21]) * page for f in group_stats(pgid)) / 2**20


def service_states(settings: Settings | None = None) -> list[ServiceState]:
    """The status table's rows for ``settings`` (used by the UI's home page)."""
    return Stack(settings).status()


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies awaiting their parent do not)."""
    if _start_time(pgid) is not None:  # the leader runs: no need to scan /proc
        return True
    return any(fields[0] != "Z" for fields in group_stats(pgid))


def _terminate_group(pid: int, grace_s: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group led by ``pid``; SIGKILL it after ``grace_s``."""
    for s, wait_s in ((sig, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, s)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while True:
            _reap(pid)
            if not group_alive(pid):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def format_table(rows: list[ServiceState]) -> str:
    """A plain-text table: service, URL, state."""
    header = ("service", "url", "state", "memory")
    data = [(r.name, r.url, r.state, f"{r.rss_mb:.0f} MiB" if r.pid else "-") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *data, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    total = sum(r.rss_mb for r in rows)
    return "\n".join(
        [line.format(*header), line.format(*("-" * w for w in widths))]
        + [line.format(*row) for row in data]
        + [f"total memory: {total:.0f} MiB"]
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m secml.stack up|down|status|logs [service ...]``."""
    parser = argparse.ArgumentParser(prog="secml.stack", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status", "logs"])
    parser.add_argument("services", nargs="*", help=f"a subset of: {', '.join(BY_NAME)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(BY_NAME))
    if unknown:
        parser.error(f"unknown service(s) {unknown}; known: {', '.join(BY_NAME)}")
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    stack = Stack(settings)
    out = sys.stdout
    if args.action == "up":
        t0 = time.monotonic()
        try:
            rows = stack.up(args.services or None)
        except StackError as exc:
            log.error("%s", exc)
            out.write(format_table(stack.status()) + "\n")
            return 1
        out.write(
            format_table(rows) + f"\n\nall {len(rows)} services ready in "
            f"{time.monotonic() - t0:.1f}s; logs in {stack.log_dir}\n"
        )
    elif args.action == "down":
        stopped = stack.down(args.services or None)
        out.write(f"stopped: {', '.join(stopped) or 'nothing was running'}\n")
    elif args.action == "status":
        rows = stack.status()
        out.write(format_table(rows) + "\n")
        return 0 if all(r.state in ("ready", "not built yet") for r in rows) else 3
    else:
        logs = sorted(stack.log_dir.glob("*.log"))
        if not logs:
            out.write(f"no logs under {stack.log_dir}\n")
            return 0
        os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, logs)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
