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

Run it with ``python -m training.consumer``. The package reads in the order a record travels:
:mod:`~training.consumer.loop` (poll, commit, rewind), :mod:`~training.consumer.validation`
(bytes → message → planned runs), :mod:`~training.consumer.dead_letters` (invalid → DLQ),
:mod:`~training.consumer.dispatch` (planned runs → Prefect), :mod:`~training.consumer.ledger`
(what was already done), :mod:`~training.consumer.metrics`.
"""

from training.consumer.dead_letters import DeadLetterQueue, dead_letter_envelope
from training.consumer.dispatch import (
    BULK_LIMIT,
    RUN_TAGS,
    DispatchError,
    PrefectDispatcher,
    create_runs,
)
from training.consumer.ledger import DispatchLedger, ledger_url
from training.consumer.loop import ControlConsumer, connect, ensure_topics
from training.consumer.metrics import BatchResult, ConsumerMetrics, serve_metrics
from training.consumer.validation import (
    ABP_TRAIN_PROPERTIES,
    DEPLOYMENTS,
    Dispatch,
    plan_dispatches,
    validate,
)

__all__ = [
    "ABP_TRAIN_PROPERTIES",
    "BULK_LIMIT",
    "DEPLOYMENTS",
    "RUN_TAGS",
    "BatchResult",
    "ConsumerMetrics",
    "ControlConsumer",
    "DeadLetterQueue",
    "Dispatch",
    "DispatchError",
    "DispatchLedger",
    "PrefectDispatcher",
    "connect",
    "create_runs",
    "dead_letter_envelope",
    "ensure_topics",
    "ledger_url",
    "plan_dispatches",
    "serve_metrics",
    "validate",
]
