"""Control-message consumer: Kafka → validation → Prefect flow runs; at least once, no duplicates.

Each record on ``settings.kafka_control_topic`` (consumer group ``settings.kafka_consumer_group``)
is parsed with :func:`secml.control.parse_control_message`. A valid message becomes one Prefect flow
run per deployment it needs (``dfp-train/default``, ``dfp-infer/default``, ``abp-train/default``);
a DFP flow gets ``parameters={"message": <the message, restricted to that flow's tasks>}``,
``abp-train`` gets ``{"data": <the load tasks' files>, **<training properties>}``.
An invalid message goes to ``settings.kafka_dead_letter_topic`` with its error and original bytes.

Guarantees:

* offsets are committed only after every record before them was dispatched or dead-lettered;
* a redelivered message never starts a second run: a ledger (SQLAlchemy table, SQLite under
  ``run_dir`` by default) maps ``(message id, deployment)`` to the flow run id, and each run is
  created with a Prefect idempotency key, so even a crash between creating the run and writing
  the ledger gets the existing run back from Prefect instead of a new one;
* a broker that goes away is survived: kafka-python reconnects, uncommitted offsets are retried,
  and after a rebalance the group resumes from the last committed offset;
* dead letters are at least once (a send that timed out while the broker was away may land
  twice); the envelope's ``topic/partition/offset`` identify the original record.

Runs are created in bulk (one request and one transaction per deployment per polled batch).
The training and inference runs of one message are created together: Prefect does not order
them, so an inference run uses whatever models are in production when it runs.

Metrics (Prometheus, ``settings.consumer_metrics_port``): ``consumer_messages_consumed_total``,
``consumer_messages_dispatched_total``, ``consumer_messages_dead_lettered_total``,
``consumer_duplicates_skipped_total``, ``consumer_dispatch_errors_total``,
``consumer_commit_errors_total``, ``consumer_lag_messages``, ``consumer_dispatch_seconds``.

Run it with ``python -m training.consumer``.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError

from secml.control import ControlMessage, ControlMessageError, message_id, parse_control_message
from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)

# (source, task type) → Prefect deployment "<flow-name>/<deployment-name>".
DEPLOYMENTS: dict[tuple[str, str], str] = {
    ("duo", "training"): "dfp-train/default",
    ("azure", "training"): "dfp-train/default",
    ("duo", "inference"): "dfp-infer/default",
    ("azure", "inference"): "dfp-infer/default",
    ("nvsmi", "training"): "abp-train/default",
}
RUN_TAGS = ("control-message",)
BULK_LIMIT = 100  # Prefect's limit per bulk create request
# Parameters of training/abp_flow.py:abp_train that a training task's properties may set.
ABP_TRAIN_PROPERTIES = frozenset(
    {
        "labels",
        "split_by",
        "test_fraction",
        "n_estimators",
        "max_depth",
        "learning_rate",
        "seed",
        "use_store_labels",
        "min_f1",
    }
)


class DispatchError(RuntimeError):
    """A valid message could not be dispatched now (Prefect down, deployment missing); retried."""


@dataclass(frozen=True)
class Dispatch:
    """One flow run to create for one control message."""

    message_id: str
    deployment: str
    parameters: dict[str, Any]

    @property
    def idempotency_key(self) -> str:
        """The Prefect idempotency key: the same message never makes a second run."""
        return f"control:{self.message_id}:{self.deployment}"


def plan_dispatches(
    msg: ControlMessage, deployments: Mapping[tuple[str, str], str] = DEPLOYMENTS
) -> list[Dispatch]:
    """The flow runs a message needs: one per deployment, each given only its own tasks.

    DFP flows take ``message``: an input ``[load, training, inference]`` on ``duo`` yields a
    ``dfp-train`` run with ``[load, training]`` and a ``dfp-infer`` run with ``[load, inference]``.
    ``abp-train`` takes ``data`` (the load tasks' files) plus the training task's properties,
    which must be parameters of that flow. A load-only message needs no run. Raises
    ControlMessageError when no deployment serves a (source, task) pair or a property is unknown.
    """
    mid = message_id(msg)
    data = msg.to_dict()
    dfp: dict[str, list[dict[str, Any]]] = {}
    abp: dict[str, dict[str, Any]] = {}
    problems = []
    for i, inp in enumerate(msg.inputs):
        source = inp.metadata.source
        for kind in ("training", "inference"):
            if kind not in inp.task_types:
                continue
            j = inp.task_types.index(kind)
            name = deployments.get((source, kind))
            if name is None:
                served = sorted(f"{s}/{k}" for s, k in deployments)
                problems.append(
                    (
                        f"inputs[{i}].tasks[{j}].type",
                        f"no deployment runs {kind!r} for source {source!r}; "
                        f"supported: {', '.join(served)}",
                    )
                )
                continue
            raw = data["inputs"][i]
            if source == "nvsmi":
                params = abp.setdefault(name, {"data": []})
                params["data"].extend(inp.files)
                for k, v in raw["tasks"][j].get("properties", {}).items():
                    if k not in ABP_TRAIN_PROPERTIES:
                        problems.append(
                            (
                                f"inputs[{i}].tasks[{j}].properties.{k}",
                                f"not a parameter of abp-train; expected one of "
                                f"{', '.join(sorted(ABP_TRAIN_PROPERTIES))}",
                            )
                        )
                    params[k] = v
                continue
            tasks = [t for t in raw["tasks"] if t["type"] in ("load", kind)]
            dfp.setdefault(name, []).append({**raw, "tasks": tasks})
    if problems:
        raise ControlMessageError(problems)
    plans = [Dispatch(mid, n, {"message": {"id": mid, "inputs": ins}}) for n, ins in dfp.items()]
    return plans + [Dispatch(mid, n, params) for n, params in abp.items()]


class DispatchLedger:
    """Idempotency record: (message id, deployment) → flow run id, and dead-lettered positions."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, future=True)
        meta = MetaData()
        self.dispatches = Table(
            "control_dispatches",
            meta,
            Column("message_id", String(250), primary_key=True),
            Column("deployment", String(200), primary_key=True),
            Column("flow_run_id", String(64), nullable=False),
            Column("topic", String(250)),
            Column("partition", Integer),
            Column("offset", Integer),
            Column("dispatched_at", DateTime(timezone=True), nullable=False),
        )
        self.dead_letters = Table(
            "control_dead_letters",
            meta,
            Column("topic", String(250), primary_key=True),
            Column("partition", Integer, primary_key=True),
            Column("offset", Integer, primary_key=True),
            Column("error", Text, nullable=False),
            Column("dead_lettered_at", DateTime(timezone=True), nullable=False),
        )
        meta.create_all(self.engine)

    def dispatched(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The flow run ids already recorded for the given (message id, deployment) keys."""
        keys = list(set(keys))
        found: dict[tuple[str, str], str] = {}
        t = self.dispatches
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 200):
                chunk = keys[start : start + 200]
                rows = conn.execute(
                    select(t.c.message_id, t.c.deployment, t.c.flow_run_id).where(
                        tuple_(t.c.message_id, t.c.deployment).in_(chunk)
                    )
                )
                found.update({(r[0], r[1]): r[2] for r in rows})
        return found

    def record_dispatches(self, rows: list[dict[str, Any]]) -> None:
        """Record dispatched runs (rows already present are left as they are)."""
        if not rows:
            return
        now = datetime.now(UTC)
        stamped = [{**row, "dispatched_at": now} for row in rows]
        try:
            with self.engine.begin() as conn:
                conn.execute(self.dispatches.insert(), stamped)
            return
        except IntegrityError:
            pass  # another consumer recorded some of them: fall back to one row at a time
        for row in stamped:
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.dispatches.insert(), [row])
            except IntegrityError:
                log.debug("ledger already holds %s/%s", row["message_id"], row["deployment"])

    def is_dead_lettered(self, topic: str, partition: int, offset: int) -> bool:
        """Whether the record at this position was already sent to the dead-letter topic."""
        t = self.dead_letters
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.c.offset).where(
                    t.c.topic == topic, t.c.partition == partition, t.c.offset == offset
                )
            ).first()
        return row is not None

    def record_dead_letter(self, topic: str, partition: int, offset: int, error: str) -> None:
        """Record that the record at this position went to the dead-letter topic."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    self.dead_letters.insert().values(
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        error=error[:4000],
                        dead_lettered_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            pass

    def count(self) -> int:
        """Number of dispatched runs recorded."""
        from sqlalchemy import func

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.dispatches)).scalar())

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


class PrefectDispatcher:
    """Creates flow runs of deployments through the Prefect API (idempotent by key)."""

    def __init__(self, api_url: str | None = None) -> None:
        from prefect.client.orchestration import SyncPrefectClient
        from prefect.settings import PREFECT_API_URL, temporary_settings

        self._ids: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._bulk_unsupported = False
        if api_url:
            with temporary_settings({PREFECT_API_URL: api_url}):
                self._client: SyncPrefectClient = _sync_client()
        else:
            self._client = _sync_client()
        self._client.__enter__()

    def deployment_id(self, name: str) -> Any:
        """The id of deployment ``<flow>/<deployment>`` (cached)."""
        from prefect.exceptions import ObjectNotFound

        with self._lock:
            if name in self._ids:
                return self._ids[name]
        try:
            dep = self._client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise DispatchError(
                f"Prefect deployment {name!r} does not exist; deploy it "
                "(python -m training.deploy) and the message will be retried"
            ) from None
        except Exception as exc:  # noqa: BLE001  (Prefect unreachable: retry later)
            raise DispatchError(f"cannot look up deployment {name!r}: {exc}") from exc
        with self._lock:
            self._ids[name] = dep.id
        return dep.id

    def __call__(self, d: Dispatch) -> str:
        """Create (or get back, by idempotency key) the flow run for ``d``; return its id."""
        from prefect.exceptions import ObjectNotFound

        dep_id = self.deployment_id(d.deployment)
        try:
            run = self._client.create_flow_run_from_deployment(
                dep_id,
                parameters=d.parameters,
                idempotency_key=d.idempotency_key,
                tags=list(RUN_TAGS),
                name=_run_name(d.message_id),
            )
        except ObjectNotFound:
            with self._lock:
                self._ids.pop(d.deployment, None)  # deployment was re-created; look it up again
            raise DispatchError(f"deployment {d.deployment!r} disappeared; retrying") from None
        except Exception as exc:  # noqa: BLE001  (any API failure means: retry later)
            raise DispatchError(f"creating a run of {d.deployment!r} failed: {exc}") from exc
        return str(run.id)

    def dispatch_batch(self, deployment: str, ds: list[Dispatch]) -> list[str | DispatchError]:
        """Create up to BULK_LIMIT runs of one deployment in one request and one transaction.

        Uses Prefect's ``POST /deployments/{id}/create_flow_run/bulk`` (idempotency keys apply
        as for single runs); falls back to one request per run where the server lacks it.
        """
        from prefect.client.schemas.actions import DeploymentFlowRunCreate
        from prefect.states import Scheduled, to_state_create

        if not ds:
            return []
        if self._bulk_unsupported:
            return self._singles(ds)
        if len(ds) > BULK_LIMIT:
            out: list[str | DispatchError] = []
            for i in range(0, len(ds), BULK_LIMIT):
                out.extend(self.dispatch_batch(deployment, ds[i : i + BULK_LIMIT]))
            return out
        dep_id = self.deployment_id(deployment)
        body = [
            DeploymentFlowRunCreate(
                parameters=d.parameters,
                state=to_state_create(Scheduled()),
                tags=list(RUN_TAGS),
                name=_run_name(d.message_id),
                idempotency_key=d.idempotency_key,
            ).model_dump(mode="json", exclude_unset=True)
            for d in ds
        ]
        try:
            response = self._client.request(
                "POST",
                "/deployments/{id}/create_flow_run/bulk",
                path_params={"id": dep_id},
                json=body,
            )
        except Exception as exc:  # noqa: BLE001
            status = getattr(getattr(exc, "response", None), "status_code", None)
            detail = getattr(getattr(exc, "response", None), "text", "")
            if status == 404 and "Deployment not found" in detail:
                with self._lock:
                    self._ids.pop(deployment, None)
                err = DispatchError(f"deployment {deployment!r} disappeared; retrying")
                return [err] * len(ds)
            if status in (404, 405):
                log.info("Prefect server has no bulk flow-run endpoint; creating runs one by one")
                self._bulk_unsupported = True
                return self._singles(ds)
            return [DispatchError(f"creating runs of {deployment!r} failed: {exc}")] * len(ds)
        results = response.json().get("results", [])
        if len(results) != len(ds):
            return [
                DispatchError(
                    f"bulk create of {deployment!r} answered {len(results)} "
                    f"results for {len(ds)} runs"
                )
            ] * len(ds)
        created: list[str | DispatchError] = []
        for d, r in zip(ds, results, strict=True):
            if r.get("status") == "CREATED" and r.get("flow_run_id"):
                created.append(str(r["flow_run_id"]))
            else:
                created.append(
                    DispatchError(
                        f"run of {deployment!r} for {d.message_id} failed: {r.get('error')}"
                    )
                )
        return created

    def _singles(self, ds: list[Dispatch]) -> list[str | DispatchError]:
        """One request per run (servers without the bulk endpoint)."""
        out: list[str | DispatchError] = []
        for d in ds:
            try:
                out.append(self(d))
            except DispatchError as exc:
                out.append(exc)
        return out

    def close(self) -> None:
        """Close the API client."""
        self._client.__exit__(None, None, None)


def _sync_client() -> Any:
    """A synchronous Prefect client for the configured API."""
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _run_name(mid: str) -> str:
    """A readable flow-run name derived from the message id."""
    return "cm-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in mid)[:60]


@dataclass
class ConsumerMetrics:
    """The consumer's Prometheus metrics, on their own registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.consumed = Counter(
            "consumer_messages_consumed", "Control messages read from Kafka", registry=r
        )
        self.dispatched = Counter(
            "consumer_messages_dispatched",
            "Flow runs created from control messages",
            ["deployment"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "consumer_messages_dead_lettered",
            "Invalid control messages sent to the dead-letter topic",
            registry=r,
        )
        self.duplicates = Counter(
            "consumer_duplicates_skipped",
            "Redelivered or repeated messages whose run already existed",
            registry=r,
        )
        self.dispatch_errors = Counter(
            "consumer_dispatch_errors", "Failed dispatch attempts (retried)", registry=r
        )
        self.commit_errors = Counter(
            "consumer_commit_errors", "Failed offset commits (retried)", registry=r
        )
        self.lag = Gauge(
            "consumer_lag_messages",
            "Messages on the control topic not yet consumed by this consumer",
            ["topic", "partition"],
            registry=r,
        )
        self.dispatch_seconds = Histogram(
            "consumer_dispatch_seconds",
            "Time to validate and dispatch one polled batch",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


@dataclass
class BatchResult:
    """What one polled batch did."""

    consumed: int = 0
    dispatched: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    failed: int = 0
    commit: dict[Any, int] = field(default_factory=dict)


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
            bootstrap_servers=s.kafka_bootstrap_servers,
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
        self.producer = self._make_producer()
        self.ledger = ledger or DispatchLedger(ledger_url(s))
        self.dispatcher = dispatcher or PrefectDispatcher(s.prefect_api_url)
        self.metrics = metrics or ConsumerMetrics()
        self.max_batch = max_batch
        self.poll_timeout_ms = poll_timeout_ms
        self.idle_wait_s = idle_wait_s
        self._idle_wait = 0.0  # the wait after the next empty poll; 0 while records flow
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="dispatch")
        self._pending_commit: dict[Any, int] = {}
        self._stop = threading.Event()
        self._last_lag = 0.0
        self._backoff_s = 1.0

    def _make_producer(self) -> Any:
        """The dead-letter producer: acks from all replicas, bounded waits if the broker is away."""
        from kafka import KafkaProducer

        return KafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            acks="all",
            retries=5,
            max_block_ms=10000,
            reconnect_backoff_max_ms=2000,
        )

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
        """
        from kafka.errors import KafkaError

        self._retry_commit()
        timeout_ms = 0 if self._idle_wait else self.poll_timeout_ms
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
                msg = parse_control_message(rec.value if rec.value is not None else b"")
                plans.append((rec, plan_dispatches(msg, self.deployments)))
            except ControlMessageError as exc:
                dead.append((rec, exc))
        failed_at: dict[Any, int] = {}
        dead_failed = self._dead_letter(dead, res)
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
        outcomes = self._create_runs(todo)
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

    def _create_runs(
        self, todo: dict[tuple[str, str], tuple[Any, Dispatch]]
    ) -> dict[tuple[str, str], str | DispatchError]:
        """Create the runs: in bulk per deployment when the dispatcher can, else one by one."""
        outcomes: dict[tuple[str, str], str | DispatchError] = {}
        batch = getattr(self.dispatcher, "dispatch_batch", None)
        if batch is None:
            single = {key: self._pool.submit(self.dispatcher, d) for key, (_, d) in todo.items()}
            for key, fut in single.items():
                try:
                    outcomes[key] = fut.result()
                except DispatchError as exc:
                    outcomes[key] = exc
            return outcomes
        groups: dict[str, list[tuple[str, str]]] = {}
        for key, (_, d) in todo.items():
            groups.setdefault(d.deployment, []).append(key)
        chunks = [
            (dep, keys[i : i + BULK_LIMIT])
            for dep, keys in groups.items()
            for i in range(0, len(keys), BULK_LIMIT)
        ]
        # One bulk request at a time: each is one write transaction on the Prefect database,
        # and parallel ones only contend for its lock (SQLite answers "database is locked").
        for dep, keys in chunks:
            try:
                results = batch(dep, [todo[k][1] for k in keys])
            except DispatchError as exc:
                results = [exc] * len(keys)
            outcomes.update(zip(keys, results, strict=True))
        return outcomes

    def _dead_letter(self, dead: list[tuple[Any, ControlMessageError]], res: BatchResult) -> list:
        """Send invalid records to the dead-letter topic; return those that could not be sent."""
        from kafka.errors import KafkaError

        dlq = self.settings.kafka_dead_letter_topic
        sent = []
        for rec, err in dead:
            if self.ledger.is_dead_lettered(rec.topic, rec.partition, rec.offset):
                res.duplicates += 1
                self.metrics.duplicates.inc()
                continue
            envelope = dead_letter_envelope(rec, err)
            headers = [
                ("error", str(err).encode("utf-8")[:8000]),
                ("original-topic", rec.topic.encode()),
                ("original-partition", str(rec.partition).encode()),
                ("original-offset", str(rec.offset).encode()),
            ]
            try:
                fut = self.producer.send(
                    dlq, json.dumps(envelope).encode("utf-8"), key=rec.key, headers=headers
                )
            except KafkaError as exc:
                fut = exc
            sent.append((rec, err, fut))
        failed = []
        for rec, err, fut in sent:
            try:
                if isinstance(fut, KafkaError):
                    raise fut
                fut.get(timeout=15)
            except KafkaError as exc:
                log.warning("dead-lettering offset %d failed (%s); will retry", rec.offset, exc)
                failed.append(rec)
                continue
            self.ledger.record_dead_letter(rec.topic, rec.partition, rec.offset, str(err))
            res.dead_lettered += 1
            self.metrics.dead_lettered.inc()
            log.warning(
                "invalid control message at %s[%d]@%d → %s: %s",
                rec.topic,
                rec.partition,
                rec.offset,
                dlq,
                err,
            )
        if failed:
            # Drop what the producer still buffers, so the retry is the only copy it sends
            # (a record that reached the broker just before it went away may still appear twice:
            # dead letters are at least once; their ``topic/partition/offset`` identify them).
            self.producer.close(timeout=0)
            self.producer = self._make_producer()
        return failed

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
        """Refresh the lag gauge (end offset − position) every few seconds."""
        from kafka.errors import KafkaError

        now = time.monotonic()
        if now - self._last_lag < every_s or self._pending_commit:
            return
        self._last_lag = now
        parts = list(self.consumer.assignment())
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
            self.producer.close(timeout=5)
            close = getattr(self.dispatcher, "close", None)
            if close:
                close()
            self.ledger.close()


def _first(d: dict[Any, int], tp: Any, offset: int) -> None:
    """Keep the smallest failed offset per partition."""
    d[tp] = min(d.get(tp, offset), offset)


def dead_letter_envelope(rec: Any, err: ControlMessageError) -> dict[str, Any]:
    """The dead-letter record: the error, where the message came from, and its original bytes."""
    raw = rec.value or b""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {
        "error": str(err),
        "problems": [{"path": p, "error": m} for p, m in err.problems],
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "timestamp_ms": rec.timestamp,
        "key_b64": base64.b64encode(rec.key).decode() if rec.key is not None else None,
        "original_b64": base64.b64encode(raw).decode(),
        "original_text": text,
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }


def ledger_url(settings: Settings) -> str:
    """The idempotency ledger's database URL (SQLite under run_dir unless configured)."""
    if settings.consumer_ledger_url:
        return settings.consumer_ledger_url
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.run_dir / 'consumer-ledger.db'}"


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
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
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


def serve_metrics(consumer: ControlConsumer) -> Any:
    """Expose the consumer's metrics on ``settings.consumer_metrics_port``; return the server."""
    s = consumer.settings
    server, _thread = start_http_server(
        s.consumer_metrics_port, addr=s.host, registry=consumer.metrics.registry
    )
    log.info("metrics on http://%s:%d/metrics", s.host, s.consumer_metrics_port)
    return server


def _connect(settings: Settings, max_batch: int, concurrency: int) -> ControlConsumer:
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


def main(argv: list[str] | None = None) -> None:
    """Run the consumer service until SIGINT/SIGTERM."""
    import argparse

    parser = argparse.ArgumentParser(description="Control-message consumer (Kafka → Prefect).")
    parser.add_argument("--max-batch", type=int, default=100, help="records per poll")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="flow runs created in parallel (raise it for a PostgreSQL-backed Prefect)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    consumer = _connect(settings, args.max_batch, args.concurrency)
    server = serve_metrics(consumer)

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: finishing the current batch", signum)
        consumer.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        consumer.run()
    finally:
        server.shutdown()
    log.info("consumer stopped")


if __name__ == "__main__":
    main()
