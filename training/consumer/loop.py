"""The poll loop: poll a batch, validate, dead-letter, dispatch, commit what is safe; repeat.

Offsets are committed only after every record before them was dispatched or dead-lettered; on a
failure the partition is rewound to the first record that failed and retried with a backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from secml.control import ControlMessageError
from secml.settings import Settings, get_settings
from training.consumer.dead_letters import DeadLetterQueue
from training.consumer.dispatch import DispatchError, PrefectDispatcher, create_runs
from training.consumer.ledger import DispatchLedger, ledger_url
from training.consumer.metrics import BatchResult, ConsumerMetrics
from training.consumer.validation import DEPLOYMENTS, Dispatch, validate

log = logging.getLogger(__name__)


class ControlConsumer:
    """The consumer service: poll, validate, dispatch, dead-letter, commit."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        deployments: Mapping[tuple[str, str], str] = DEPLOYMENTS,
        dispatcher: Callable[[Dispatch], str] | None = None,
        ledger: DispatchLedger | None = None,
        metrics: ConsumerMetrics | None = None,
        max_batch: int = 100,
        concurrency: int = 2,
        poll_timeout_ms: int = 500,
        idle_wait_s: float = 0.25,
        client_id: str = "secml-control-consumer",
    ) -> None:
        from kafka import KafkaConsumer

        self.settings = s = settings or get_settings()
        self.topic = s.kafka_control_topic
        self.deployments = dict(deployments)
        ensure_topics(s)
        self.consumer = KafkaConsumer(
            self.topic,
            **s.kafka_client_config(),
            group_id=s.kafka_consumer_group,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            session_timeout_ms=10000,
            max_poll_interval_ms=600000,
            heartbeat_interval_ms=3000,
            reconnect_backoff_max_ms=2000,
        )
        self.ledger = ledger or DispatchLedger(ledger_url(s))
        auth = s.prefect_api_auth_string
        self.dispatcher = dispatcher or PrefectDispatcher(
            s.prefect_api_url, auth.get_secret_value() if auth is not None else None
        )
        self.metrics = metrics or ConsumerMetrics()
        self.dead_letters = DeadLetterQueue(s, self.ledger, self.metrics)
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.idle_wait_s = idle_wait_s
        self._idle_wait = 0.0  # the wait after the next empty poll; 0 while records flow
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dispatch")
        self._pending_commit: dict[Any, int] = {}
        self._stop = threading.Event()
        self._last_lag = 0.0
        self._lag_series: set[tuple[str, str]] = set()  # (topic, partition) the lag gauge holds
        self._backoff_s = 1.0

    # -- the loop
    def stop(self) -> None:
        """Ask the loop to finish its current batch and return."""
        self._stop.set()

    def run(self, idle_timeout_s: float | None = None) -> None:
        """Consume until :meth:`stop` (or ``idle_timeout_s`` without messages); then close."""
        log.info(
            "consuming %s as group %s from %s",
            self.topic,
            self.settings.kafka_consumer_group,
            self.settings.kafka_bootstrap_servers,
        )
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                if idle_timeout_s is not None and time.monotonic() - idle_since > idle_timeout_s:
                    break
                if self.poll_once().consumed:
                    idle_since = time.monotonic()
        finally:
            self.close()

    def poll_once(self) -> BatchResult:
        """Poll one batch, process it and commit what is safe to commit.

        While records flow, the poll blocks up to ``poll_timeout_ms`` for the next ones. Once a
        poll comes back empty, the consumer is idle: it polls without blocking and waits between
        polls, 10 ms doubling to ``idle_wait_s``, on the stop event (so ``stop()`` still ends it
        at once). Blocking polls would not idle with a broker that answers an empty fetch at
        once instead of holding it for ``fetch.max.wait.ms`` (noida-db does): kafka-python then
        sends fetch after fetch for the whole timeout, a busy loop (~80-95% of a core measured).
        Until the group is settled (see :meth:`_group_settled`) polls block even when idle:
        kafka-python 3.0.12 never completes a group join from polls with ``timeout_ms=0``.
        """
        from kafka.errors import KafkaError

        self._retry_commit()
        timeout_ms = 0 if self._idle_wait and self._group_settled() else self.poll_timeout_ms
        try:
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.max_batch)
        except KafkaError as exc:
            log.warning("poll failed (%s); retrying", exc)
            self._stop.wait(1.0)
            return BatchResult()
        records = [r for part in polled.values() for r in part]
        if not records:
            self._idle_wait = min(max(self._idle_wait * 2, 0.01), self.idle_wait_s)
            self._stop.wait(self._idle_wait)
            self._update_lag()
            return BatchResult()
        self._idle_wait = 0.0
        try:
            result = self.process(records)
        except Exception:
            # Unexpected failure (ledger database, bug): rewind so nothing is skipped.
            log.exception("processing %d records failed; rewinding to retry", len(records))
            self._rewind(records)
            self._stop.wait(2.0)
            return BatchResult(consumed=len(records), failed=len(records))
        if result.commit:
            self._pending_commit.update(result.commit)
            self._retry_commit()
        self._update_lag()
        return result

    def process(self, records: list[Any]) -> BatchResult:
        """Validate, dead-letter and dispatch ``records``; return the offsets safe to commit.

        On a dispatch failure the partition is rewound to the first record that failed (the
        ones after it are in the ledger or will be found by idempotency key) and the offsets
        before it are still committed.
        """
        from kafka import TopicPartition

        started = time.perf_counter()
        res = BatchResult(consumed=len(records))
        self.metrics.consumed.inc(len(records))
        plans: list[tuple[Any, list[Dispatch]]] = []
        dead: list[tuple[Any, ControlMessageError]] = []
        for rec in records:
            try:
                plans.append((rec, validate(rec.value, self.deployments)))
            except ControlMessageError as exc:
                dead.append((rec, exc))
        failed_at: dict[Any, int] = {}
        dead_failed = self.dead_letters.send(dead, res)
        for rec in dead_failed:
            _first(failed_at, TopicPartition(rec.topic, rec.partition), rec.offset)
        for rec in self._dispatch(plans, res):
            _first(failed_at, TopicPartition(rec.topic, rec.partition), rec.offset)
        last: dict[Any, int] = {}
        for rec in records:
            tp = TopicPartition(rec.topic, rec.partition)
            if tp in failed_at and rec.offset >= failed_at[tp]:
                continue
            last[tp] = max(last.get(tp, -1), rec.offset)
        res.commit = {tp: off + 1 for tp, off in last.items()}
        for tp, off in failed_at.items():
            log.warning("rewinding %s to offset %d to retry", tp, off)
            self._seek(tp, off)
        if failed_at:  # back off before the retry: 1 s, doubling to 30 s while nothing works
            progress = res.dispatched or res.dead_lettered
            self._backoff_s = 1.0 if progress else min(self._backoff_s * 2, 30.0)
            self._stop.wait(self._backoff_s)  # stop() ends the wait: SIGTERM is not delayed
        else:
            self._backoff_s = 1.0
        self.metrics.dispatch_seconds.observe(time.perf_counter() - started)
        return res

    # -- steps
    def _dispatch(self, plans: list[tuple[Any, list[Dispatch]]], res: BatchResult) -> list[Any]:
        """Create the runs not yet in the ledger; return the records whose dispatch failed."""
        keys = [(d.message_id, d.deployment) for _, ds in plans for d in ds]
        done = self.ledger.dispatched(keys)
        todo: dict[tuple[str, str], tuple[Any, Dispatch]] = {}
        for rec, ds in plans:
            for d in ds:
                key = (d.message_id, d.deployment)
                if key in done or key in todo:
                    res.duplicates += 1
                    self.metrics.duplicates.inc()
                    log.info("message %s already dispatched to %s; skipped", *key)
                else:
                    todo[key] = (rec, d)
        outcomes = create_runs(self.dispatcher, todo, self._pool)
        ok_rows, failed = [], []
        for key, run_id in outcomes.items():
            rec, d = todo[key]
            if isinstance(run_id, DispatchError):
                exc = run_id
                log.warning("message %s → %s: %s (will retry)", d.message_id, d.deployment, exc)
                self.metrics.dispatch_errors.inc()
                res.failed += 1
                failed.append(rec)
                continue
            ok_rows.append(
                {
                    "message_id": d.message_id,
                    "deployment": d.deployment,
                    "flow_run_id": run_id,
                    "topic": rec.topic,
                    "partition": rec.partition,
                    "offset": rec.offset,
                }
            )
            res.dispatched += 1
            self.metrics.dispatched.labels(d.deployment).inc()
            log.info("message %s → %s flow run %s", d.message_id, d.deployment, run_id)
        self.ledger.record_dispatches(ok_rows)
        return failed

    def _group_settled(self) -> bool:
        """True while partitions are assigned and no rebalance is asking this member to rejoin.

        A join or rejoin only progresses inside a blocking poll: from non-blocking ones a new
        consumer stayed unassigned for 40 s (a make test run saw 15 minutes), and an idle
        member kept a partition another member had been given. ``need_rejoin`` is the
        coordinator's own flag (kafka-python's, not public API); without it, only the
        assignment is checked.
        """
        if not self.consumer.assignment():
            return False
        need_rejoin = getattr(getattr(self.consumer, "_coordinator", None), "need_rejoin", None)
        return not (callable(need_rejoin) and need_rejoin())

    def _rewind(self, records: list[Any]) -> None:
        """Seek every partition in ``records`` back to its first record."""
        from kafka import TopicPartition

        first: dict[Any, int] = {}
        for rec in records:
            _first(first, TopicPartition(rec.topic, rec.partition), rec.offset)
        for tp, off in first.items():
            self._seek(tp, off)

    def _seek(self, tp: Any, offset: int) -> None:
        """Seek ``tp`` to ``offset`` unless a rebalance took it away (its new owner resumes)."""
        from kafka.errors import IllegalStateError

        try:
            self.consumer.seek(tp, offset)
        except (IllegalStateError, AssertionError) as exc:
            log.info("not seeking %s (no longer assigned): %s", tp, exc)

    def _retry_commit(self) -> None:
        """Commit the offsets waiting to be committed; keep them if the broker is away."""
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        if not self._pending_commit:
            return
        offsets = {tp: OffsetAndMetadata(off, "", -1) for tp, off in self._pending_commit.items()}
        try:
            self.consumer.commit(offsets, timeout_ms=5000)
        except KafkaError as exc:
            self.metrics.commit_errors.inc()
            log.warning("commit of %s failed (%s); will retry", offsets, exc)
            owned = self.consumer.assignment()
            if owned:  # a partition now owned by another member is redelivered there
                for tp in [tp for tp in self._pending_commit if tp not in owned]:
                    del self._pending_commit[tp]
            return
        self._pending_commit.clear()

    def _update_lag(self, every_s: float = 5.0) -> None:
        """Refresh the assignment and lag gauges (end offset − position) every few seconds.

        The assignment gauge is refreshed even while a commit waits for the broker (the lag
        then waits with it). A partition this member no longer holds drops out of the lag
        gauge (its new owner reports it), so a rebalance leaves no stale lag behind.
        """
        from kafka.errors import KafkaError

        now = time.monotonic()
        if now - self._last_lag < every_s:
            return
        parts = list(self.consumer.assignment())
        self.metrics.assigned.set(len(parts))  # also while a commit waits: a stuck join shows
        if self._pending_commit:
            return
        self._last_lag = now
        held = {(tp.topic, str(tp.partition)) for tp in parts}
        for labels in self._lag_series - held:
            self.metrics.lag.remove(*labels)
        self._lag_series = held
        if not parts:
            return
        try:
            ends = self.consumer.end_offsets(parts, timeout_ms=3000)
            for tp in parts:
                pos = self.consumer.position(tp, timeout_ms=2000)
                if pos is not None:
                    lag = max(0, ends[tp] - pos)
                    self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
        except (KafkaError, KeyError) as exc:
            log.debug("lag not updated: %s", exc)

    def close(self) -> None:
        """Commit what is safe, then close Kafka clients, the dispatcher and the ledger."""
        self._retry_commit()
        self._pool.shutdown(wait=True)
        try:
            self.consumer.close(autocommit=False, timeout_ms=10000)
        finally:
            self.dead_letters.close()
            close = getattr(self.dispatcher, "close", None)
            if close:
                close()
            self.ledger.close()


def _first(d: dict[Any, int], tp: Any, offset: int) -> None:
    """Keep the smallest failed offset per partition."""
    d[tp] = min(d.get(tp, offset), offset)


def ensure_topics(settings: Settings, partitions: int = 1) -> None:
    """Create the control, dead-letter and output topics unless they exist."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    names = [
        settings.kafka_control_topic,
        settings.kafka_dead_letter_topic,
        settings.kafka_output_topic,
    ]
    try:
        admin = KafkaAdminClient(**settings.kafka_client_config())
    except KafkaError as exc:
        log.warning("cannot reach Kafka at %s: %s", settings.kafka_bootstrap_servers, exc)
        return
    try:
        missing = [n for n in names if n not in set(admin.list_topics())]
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, partitions, 1)])
                log.info("created topic %s", name)
            except TopicAlreadyExistsError:
                pass
    except KafkaError as exc:
        log.warning("could not check or create topics %s: %s", names, exc)
    finally:
        admin.close()


def connect(settings: Settings, max_batch: int, concurrency: int) -> ControlConsumer:
    """Create the consumer, waiting for the broker to come up if it is not there yet."""
    from kafka.errors import KafkaError

    delay = 1.0
    while True:
        try:
            return ControlConsumer(settings, max_batch=max_batch, concurrency=concurrency)
        except KafkaError as exc:
            log.warning(
                "Kafka at %s not reachable (%s); retrying in %.0fs",
                settings.kafka_bootstrap_servers,
                exc,
                delay,
            )
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
