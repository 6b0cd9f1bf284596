"""The local launcher: busy ports, idempotent start, stopping only its own processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from secml.settings import Settings
from secml.stack import ServiceState, Stack, StackError, format_table, free_port, port_free


def test_busy_port_is_named_with_its_setting(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_free("127.0.0.1", port)
        stack = Stack(Settings(run_dir=tmp_path, gateway_port=port))
        with pytest.raises(StackError) as err:
            stack.up(["gateway"])
    assert f"port {port}" in str(err.value)
    assert "SECML_GATEWAY_PORT" in str(err.value)
    assert stack.pid("gateway") is None


def test_table_lists_service_url_state() -> None:
    table = format_table(
        [
            ServiceState("mlflow", "http://127.0.0.1:5000", "ready", pid=10, rss_mb=500.4),
            ServiceState("ui", "http://127.0.0.1:8501", "stopped"),
        ]
    )
    lines = table.splitlines()
    assert lines[0].split() == ["service", "url", "state", "memory"]
    assert lines[2].split() == ["mlflow", "http://127.0.0.1:5000", "ready", "500", "MiB"]
    assert lines[3].split() == ["ui", "http://127.0.0.1:8501", "stopped", "-"]
    assert lines[-1] == "total memory: 500 MiB"


def test_stale_pid_file_is_ignored(tmp_path: Path) -> None:
    stack = Stack(Settings(run_dir=tmp_path))
    stack.pid_dir.mkdir(parents=True)
    # A PID file whose process is gone (or was reused) must not be treated as ours.
    (stack.pid_dir / "mlflow.json").write_text('{"pid": 1, "start_time": "0", "cmd": []}')
    assert stack.pid("mlflow") is None
    assert not (stack.pid_dir / "mlflow.json").exists()


@pytest.mark.integration
def test_second_up_leaves_running_alone_and_down_stops_only_ours(
    tmp_path: Path, stack_settings: Settings
) -> None:

    settings = Settings(run_dir=tmp_path, kafka_port=free_port())
    stack = Stack(settings)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        rows = stack.up(["kafka"])
        assert [(r.name, r.state) for r in rows] == [("kafka", "ready")]
        pid = stack.pid("kafka")
        assert pid is not None
        stack.up(["kafka"])
        assert stack.pid("kafka") == pid
        assert stack.down() == ["kafka"]
        assert stack.pid("kafka") is None
        assert port_free(settings.host, settings.kafka_port)
        assert bystander.poll() is None, "down must not touch processes it did not start"
    finally:
        stack.down()
        bystander.kill()
        bystander.wait()


# A process that ignores SIGTERM and starts a child in its group that ignores it too.
_STUBBORN = (
    "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "c = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)']); "
    "print('ready', c.pid, flush=True); time.sleep(600)"
)
_POLITE = "import time; print('ready', flush=True); time.sleep(600)"


def _group_leader(code: str) -> tuple[subprocess.Popen, list[int]]:
    """A Python process leading its own process group (as ``_spawn`` starts services), and
    the PIDs it prints after ``ready``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    ready, *pids = proc.stdout.readline().split()
    assert ready == b"ready"
    return proc, [int(p) for p in pids]


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (``Z``: a zombie awaiting its parent), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_down_stops_groups_in_parallel_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    """down() stops every recorded group, SIGKILLs one that ignores SIGTERM after the grace,
    removes the PID files, and leaves alone a process it did not start."""
    from secml.stack import group_alive

    stack = Stack(Settings(run_dir=tmp_path))
    stubborn, (stubborn_child,) = _group_leader(_STUBBORN)
    polite, _ = _group_leader(_POLITE)
    worker, _ = _group_leader(_POLITE)  # stands in for a service started `after` another
    bystander, _ = _group_leader(_POLITE)
    try:
        stack.record("kafka", stubborn.pid, ["stubborn"])
        stack.record("prefect", polite.pid, ["polite"])
        stack.record("consumer", worker.pid, ["worker"])
        assert stack.down(timeout_s=1.0) == ["consumer", "kafka", "prefect"]
        for proc in (stubborn, polite, worker):  # down() reaped them (they are our children)
            assert proc.wait(timeout=10) is not None
            assert not group_alive(proc.pid), "the whole group must be gone"
        assert _state(stubborn_child) in (None, "Z"), "its SIGTERM-proof child is killed too"
        assert not list(stack.pid_dir.glob("*.json"))
        assert bystander.poll() is None, "down must not touch processes it did not start"
        assert stack.down() == []
    finally:
        for proc in (stubborn, polite, worker, bystander):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
