"""The dead-letter queue: invalid control messages go to ``settings.kafka_dead_letter_topic``.

Each dead letter is an envelope with the error, every problem's path, where the record came from
(``topic/partition/offset``) and its original bytes. Dead letters are at least once (a send that
timed out while the broker was away may land twice); the ledger records each position sent, so a
redelivered invalid record is not sent again.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from secml.control import ControlMessageError
from secml.settings import Settings
from training.consumer.ledger import DispatchLedger
from training.consumer.metrics import BatchResult, ConsumerMetrics

log = logging.getLogger(__name__)


class DeadLetterQueue:
    """Sends invalid records to the dead-letter topic and records each position sent."""

    def __init__(
        self,
        settings: Settings,
        ledger: DispatchLedger,
        metrics: ConsumerMetrics,
        make_producer: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.metrics = metrics
        self._make_producer = make_producer or self._kafka_producer
        self.producer = self._make_producer()

    def _kafka_producer(self) -> Any:
        """The dead-letter producer: acks from all replicas, bounded waits if the broker is away."""
        from kafka import KafkaProducer

        return KafkaProducer(
            **self.settings.kafka_client_config(),
            acks="all",
            retries=5,
            max_block_ms=10000,
            reconnect_backoff_max_ms=2000,
        )

    def send(self, dead: list[tuple[Any, ControlMessageError]], res: BatchResult) -> list[Any]:
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

    def close(self) -> None:
        """Flush and close the producer."""
        self.producer.close(timeout=5)


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
