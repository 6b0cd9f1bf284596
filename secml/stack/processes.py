"""Process control: spawn bookkeeping helpers, process groups, memory, and stopping them.

Every service runs as the leader of its own process group (``start_new_session``); these
helpers look at and signal exactly those groups, by PID and recorded start time.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from secml.settings import Settings

VENV_BIN = Path(sys.executable).parent


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
    if s.mlflow_password is not None:  # the clients' own variables: MLflow and Prefect read them
        env["MLFLOW_TRACKING_USERNAME"] = s.mlflow_username
        env["MLFLOW_TRACKING_PASSWORD"] = s.mlflow_password.get_secret_value()
    if s.prefect_api_auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = s.prefect_api_auth_string.get_secret_value()
    return env


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (guards against PID reuse), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]


def free_ports(n: int, lo: int = 20000, hi: int = 29999, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports in ``[lo, hi]`` that nothing listens on.

    Drawn away from the defaults and from the ephemeral range, which a busy machine's outgoing
    connections take (a server restarted on the same port could find it gone); callers that run
    side by side pass ranges of their own.
    """
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < n:
        p = rng.randint(lo, hi)
        if p not in ports and port_free(host, p):
            ports.append(p)
    return ports


def free_port(lo: int = 20000, hi: int = 29999) -> int:
    """One port in ``[lo, hi]`` that nothing listens on (see :func:`free_ports`)."""
    return free_ports(1, lo, hi)[0]


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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


def _all_stats() -> dict[int, list[str]]:
    """pid -> ``/proc/<pid>/stat`` fields after the command name, for every live process."""
    out: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            out[int(stat.parent.name)] = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, ValueError):
            continue
    return out


def tree_pids(pgid: int) -> list[int]:
    """Every live process of group ``pgid`` and every descendant of those, even one that left
    the group (a server's workers or stubs that start sessions of their own)."""
    stats = _all_stats()
    found = {pid for pid, f in stats.items() if int(f[2]) == pgid and f[0] != "Z"}
    children: dict[int, list[int]] = {}
    for pid, f in stats.items():
        children.setdefault(int(f[1]), []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and stats[child][0] != "Z":
                found.add(child)
                todo.append(child)
    return sorted(found)


def group_rss_mb(pgid: int | None) -> float:
    """Resident memory (MiB) of the process group ``pgid`` and its descendants (:func:`tree_pids`);
    pages shared between them count once per process (an upper bound)."""
    if pgid is None:
        return 0.0
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in tree_pids(pgid):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


def group_pss_mb(pgid: int | None) -> float:
    """Proportional set size (MiB) of the same processes: a shared page counts as its share."""
    if pgid is None:
        return 0.0
    total_kib = 0
    for pid in tree_pids(pgid):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
                    break
        except (OSError, IndexError, ValueError):
            continue
    return total_kib / 1024


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies awaiting their parent do not)."""
    if start_time(pgid) is not None:  # the leader runs: no need to scan /proc
        return True
    return any(fields[0] != "Z" for fields in group_stats(pgid))


def terminate_group(pid: int, grace_s: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the process group led by ``pid``; SIGKILL it after ``grace_s``."""
    for s, wait_s in ((sig, grace_s), (signal.SIGKILL, 2.0)):
        try:
            os.killpg(pid, s)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while True:
            reap(pid)
            if not group_alive(pid):
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    reap(pid)


def reap(pid: int) -> None:
    """Collect ``pid`` if it is our own child, so it does not linger as a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
