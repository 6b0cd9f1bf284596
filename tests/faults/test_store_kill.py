"""Fault: the process writing labels is killed with SIGKILL in the middle of labelling.

The writer is a real subprocess labelling through the UI's own path
(``ui.backend.label_events`` → ``DetectionStore.label_event``) and printing ``ACK <id> <note>``
only after the call returned, that is after the transaction committed: what an analyst sees as
"saved". It is killed with ``kill -9`` while it labels as fast as it can, so the kill lands
inside a transaction most of the time. Afterwards the store opens, every acknowledged label is
there, and nothing but the label in flight (committed, not yet acknowledged) is extra. Run on a
SQLite file (the local default) and on the machine's real PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, text

from secml.settings import ROOT
from secml.store import DetectionStore

DETECTIONS = 400
KILL_AFTER_ACKS = 150

WRITER = """
import sys
from secml.store import DetectionStore
from ui.backend import label_events

store = DetectionStore(sys.argv[1], table_prefix=sys.argv[2])
ids = [int(x) for x in sys.argv[3].split(",")]
n = 0
while True:
    for det_id in ids:
        label = "true_positive" if n % 3 else "false_positive"
        note = f"n{n}"
        label_events(store, [det_id], label, user="analyst@example.com", note=note)
        sys.stdout.write(f"ACK {det_id} {note} {label}\\n")
        sys.stdout.flush()
        n += 1
"""


def _detections(store: DetectionStore) -> list[int]:
    """``DETECTIONS`` ABP detections, each its own event."""
    rows = [
        {
            "detector": "abp",
            "source": "nvsmi",
            "record": {"gpu_uuid": f"GPU-{i:04d}", "timestamp": f"2026-01-01T00:00:{i % 60:02d}Z"},
            "score": 0.9,
            "model_version": "abp-nvsmi-xgb:1",
            "event_time": "2026-01-01T00:00:00Z",
        }
        for i in range(DETECTIONS)
    ]
    return store.add_detections(rows)


def _kill_mid_stream(url: str, prefix: str, ids: list[int]) -> list[tuple[int, str, str]]:
    """Start the writer, SIGKILL it after ``KILL_AFTER_ACKS`` acks; return every ack it printed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, prefix, ",".join(map(str, ids))],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    acks: list[tuple[int, str, str]] = []
    deadline = time.monotonic() + 300
    try:
        assert proc.stdout is not None
        while len(acks) < KILL_AFTER_ACKS:
            line = proc.stdout.readline()
            if not line:
                err = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"writer exited before {KILL_AFTER_ACKS} acks: {err[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"writer too slow: {len(acks)} acks in 300 s")
            _, det_id, note, label = line.split()
            acks.append((int(det_id), note, label))
        os.kill(proc.pid, signal.SIGKILL)
        # acks already written to the pipe before the kill count too
        for line in proc.stdout.read().splitlines():
            parts = line.split()
            if len(parts) == 4:
                acks.append((int(parts[1]), parts[2], parts[3]))
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return acks


def _check_after_kill(url: str, prefix: str) -> None:
    """Label, kill, reopen: every acknowledged label present; at most the one in flight extra."""
    store = DetectionStore(url, table_prefix=prefix)
    ids = _detections(store)
    store.close()

    acks = _kill_mid_stream(url, prefix, ids)
    assert len(acks) >= KILL_AFTER_ACKS

    after = DetectionStore(url, table_prefix=prefix)  # opens: the database is not corrupt
    try:
        if url.startswith("sqlite"):
            with after.engine.connect() as conn:
                assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        lab = after.t_lab
        with after.engine.connect() as conn:
            rows = conn.execute(select(lab.c.detection_id, lab.c.note, lab.c.label)).all()
        stored = {(int(r[0]), r[1], r[2]) for r in rows}
        lost = [a for a in acks if a not in stored]
        assert not lost, f"{len(lost)} acknowledged labels lost, first {lost[:5]}"
        extra = stored - set(acks)
        # the one label whose transaction committed before the kill but whose ack was not printed
        assert len(extra) <= 1, f"labels nobody wrote: {sorted(extra)[:5]}"
        assert len(rows) == len(stored), "a label was stored twice"
        # the store still takes writes, and the UI reads the labels it holds
        after.label_event(ids[0], "true_positive", user="analyst@example.com", note="after")
        history = after.labels_history(ids[0])
        assert "after" in set(history["note"])
        assert after.count("abp") == DETECTIONS
    finally:
        after.close()


@pytest.mark.integration
def test_kill_9_of_label_writer_sqlite(tmp_path: Path) -> None:
    """SQLite file (the local default store)."""
    _check_after_kill(f"sqlite:///{tmp_path / 'detections.db'}", "")


@pytest.mark.integration
def test_kill_9_of_label_writer_postgresql(postgres_url: str) -> None:
    """The machine's real PostgreSQL (production's store)."""
    _check_after_kill(postgres_url, "killtest_")
