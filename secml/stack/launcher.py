"""The launcher: start the services in dependency order, wait until each answers, report, stop.

Each process starts in its own session; its PID and start time go under ``<run_dir>/pids`` and
its output under ``<run_dir>/logs``. ``down`` stops exactly those processes (their process
groups) and nothing else.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from secml.settings import ROOT, Settings, get_settings
from secml.stack.preparation import StackError
from secml.stack.processes import (
    child_env,
    group_rss_mb,
    port_free,
    start_time,
    terminate_group,
)
from secml.stack.services import BY_NAME, SERVICES, Service, available

log = logging.getLogger(__name__)


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
        if start_time(info["pid"]) != info["start_time"]:
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
            json.dumps({"pid": pid, "start_time": start_time(pid), "cmd": cmd})
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
        wanted = [BY_NAME[n] for n in names] if names else [s for s in SERVICES if available(s)]
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
            if svc.started:
                svc.started(self.settings)
        except StackError as exc:
            return str(exc)
        return None

    def status(self, services: Iterable[Service] | None = None) -> list[ServiceState]:
        """The state of each service: ready, not ready, stopped, or not ours."""
        rows = []
        for svc in services or SERVICES:
            pid = self.pid(svc.name)
            if pid is None:
                state = "stopped" if available(svc) else "not built yet"
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
            terminate_group(pid, start + timeout_s - time.monotonic(), svc.stop_signal)
            (self.pid_dir / f"{name}.json").unlink(missing_ok=True)
            log.info("stopped %s (pid %d)", name, pid)
            gone[name].set()

        with ThreadPoolExecutor(max_workers=len(ours) or 1) as pool:
            list(pool.map(stop, ours))
        return [svc.name for svc in reversed(wanted) if svc.name in ours]


def service_states(settings: Settings | None = None) -> list[ServiceState]:
    """The status table's rows for ``settings`` (used by the UI's home page)."""
    return Stack(settings).status()
