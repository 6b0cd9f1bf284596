"""Fault: the Kafka-protocol broker restarts while the consumer is working through 1,000 messages.

A real broker (noida-db, its own port so the session's broker is left alone) and a real Prefect
server; the runs are created on stand-in deployments with no work pool (``standins``), so no
model is trained: dispatching is the whole cost of a message. The consumer runs as the service
does, ``ControlConsumer.run()`` in its own thread, while the test stops the broker (SIGTERM, a
clean restart: a ``kill -9`` of noida-db loses acknowledged records, see INFRA.md) and starts it
again in the middle of the stream.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secml.settings import Settings
from secml.stack import free_port
from tests.control.test_consumer import (  # the consumer tests' producers and checks
    Stream,
    _assert_dead_letters,
    _assert_exactly_once,
    _committed,
    _expected_deployment,
    _mapping,
    _produce,
    _settings,
    standins,  # noqa: F401  (fixture)
)
from training.consumer import ControlConsumer


def _wait(cond: object, what: str, timeout_s: float, errors: list[BaseException]) -> None:
    """Wait until ``cond()`` holds; fail with ``what`` (and the consumer thread's error)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if errors:
            raise AssertionError(f"consumer thread died: {errors[0]!r}")
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture
def own_broker(prefect_server: Settings, tmp_path: Path) -> Iterator[tuple[Any, Settings]]:
    """A broker of this test's own (the session's is not restarted), and settings that use it."""
    from secml.stack import Stack

    port = free_port()
    addr = f"127.0.0.1:{port}"
    base = prefect_server.model_copy(
        update={"run_dir": tmp_path / "broker", "kafka_port": port, "kafka_bootstrap_servers": addr}
    )
    stack = Stack(base)
    stack.up(["kafka"])
    yield stack, base
    stack.down(["kafka"], timeout_s=15)


@pytest.mark.integration
def test_broker_restart_during_thousand_messages(
    own_broker: tuple[Any, Settings],
    standins: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """1,000 records (10% malformed, some ids repeated), broker restarted after ~20% dispatched:
    0 valid messages lost, 0 duplicate runs (ledger and Prefect), every malformed record in the
    dead-letter topic with the contract's reason, and the group's offset at the end."""
    stack, base = own_broker
    s = _settings(base, tmp_path, uuid.uuid4().hex[:8])
    stream = Stream()
    mapping = _mapping(standins)
    errors: list[BaseException] = []
    consumer: ControlConsumer | None = None
    thread: threading.Thread | None = None
    try:
        _produce(s, stream, 600, "b", repeat_every=97)
        consumer = ControlConsumer(s, deployments=mapping, max_batch=50)

        def serve() -> None:
            try:
                consumer.run()  # type: ignore[union-attr]
            except BaseException as exc:  # noqa: BLE001  (reported by _wait)
                errors.append(exc)

        thread = threading.Thread(target=serve, name="consumer", daemon=True)
        thread.start()
        ledger = consumer.ledger
        _wait(lambda: ledger.count() >= 100, "the first 100 runs", 300, errors)
        before = ledger.count()
        stack.down(["kafka"], timeout_s=15)
        time.sleep(3.0)  # the consumer polls, commits and dead-letters against no broker
        stack.up(["kafka"])
        _produce(s, stream, 400, "b", repeat_every=97)
        assert stream.count == 1000 and len(stream.malformed) == 100
        assert before < len(stream.valid), "the restart did not happen mid-stream"

        _wait(
            lambda: (
                ledger.count() >= len(stream.valid)
                and consumer.metrics.dead_lettered._value.get() >= len(stream.malformed)  # type: ignore[union-attr]
                and _committed(s) == 1000
            ),
            "every record dispatched or dead-lettered and committed",
            600,
            errors,
        )
    finally:
        if consumer is not None:
            consumer.stop()
        if thread is not None:
            thread.join(timeout=60)
    assert not errors, errors
    # the ledger: one row per (valid message, deployment), none twice
    keys = [(mid, _expected_deployment(msg, standins)) for mid, msg in stream.valid.items()]
    assert consumer.ledger.count() == len(stream.valid)
    assert set(consumer.ledger.dispatched(keys)) == set(keys)
    # Prefect: each valid id has exactly one run, with its message, on the right deployment
    _assert_exactly_once(stream, standins)
    # the dead-letter topic: every malformed record, with its error (at least once)
    _assert_dead_letters(s, stream, exactly_once=False)
    assert _committed(s) == 1000
