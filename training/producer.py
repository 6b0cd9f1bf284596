"""Publish control messages to Kafka, and inference results to the output topic as JSON lines.

CLI: ``python -m training.producer control_messages/duo-training-payload.json [--topic T]``.
The UI calls :func:`publish`; batch inference calls :func:`publish_detections`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from secml.control import ControlMessageError, message_id, parse_control_message
from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)


def new_message_id() -> str:
    """A fresh unique control-message id."""
    return f"msg-{uuid.uuid4().hex}"


def make_producer(settings: Settings) -> Any:
    """A kafka-python producer that waits for every replica (``acks=all``)."""
    from kafka import KafkaProducer

    return KafkaProducer(
        **settings.kafka_client_config(),
        acks="all",
        retries=5,
        linger_ms=5,
        reconnect_backoff_max_ms=2000,
    )


def publish(
    message: Mapping[str, Any],
    settings: Settings | None = None,
    *,
    topic: str | None = None,
    assign_id: bool = True,
    producer: Any = None,
    timeout_s: float = 30.0,
) -> str:
    """Validate ``message``, publish it to the control topic and return its id.

    A message without an ``id`` gets a fresh one when ``assign_id`` (the default), so publishing
    the same example twice triggers two runs; with ``assign_id=False`` its id is its content hash
    and the consumer dispatches identical content only once. Raises ControlMessageError for an
    invalid message and kafka's KafkaError when the broker does not acknowledge it.
    """
    s = settings or get_settings()
    data = dict(message)
    if assign_id and not data.get("id"):
        data["id"] = new_message_id()
    msg = parse_control_message(data)
    mid = message_id(msg)
    body = {**msg.to_dict(), "id": mid}  # a derived id travels with the message too
    payload = json.dumps(body, sort_keys=True).encode("utf-8")
    send_raw(
        payload, s, topic=topic, key=mid.encode("utf-8"), producer=producer, timeout_s=timeout_s
    )
    log.info("published control message %s to %s", mid, topic or s.kafka_control_topic)
    return mid


def send_raw(
    payload: bytes,
    settings: Settings | None = None,
    *,
    topic: str | None = None,
    key: bytes | None = None,
    producer: Any = None,
    timeout_s: float = 30.0,
) -> Any:
    """Send bytes as they are (no validation) and wait for the broker's acknowledgement."""
    s = settings or get_settings()
    own = producer is None
    prod = make_producer(s) if own else producer
    try:
        meta = prod.send(topic or s.kafka_control_topic, payload, key=key).get(timeout=timeout_s)
    finally:
        if own:
            prod.close(timeout=5)
    return meta


def publish_detections(
    rows: Iterable[Mapping[str, Any]] | Any,
    settings: Settings | None = None,
    *,
    topic: str | None = None,
    producer: Any = None,
    timeout_s: float = 60.0,
) -> int:
    """Publish detection rows (dicts or a DataFrame) to the output topic, one JSON object each.

    Values become plain JSON: NaN/inf → null, timestamps → ISO 8601, numpy scalars → numbers.
    The key is the row's ``user`` (or ``username``) so one user's detections stay in order.
    Returns the number of records acknowledged by the broker.
    """
    s = settings or get_settings()
    if hasattr(rows, "to_dict") and hasattr(rows, "columns"):
        rows = rows.to_dict(orient="records")
    out_topic = topic or s.kafka_output_topic
    own = producer is None
    prod = make_producer(s) if own else producer
    futures = []
    try:
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise TypeError(f"detection row {i} is a {type(row).__name__}, expected a mapping")
            record = {str(k): _jsonable(v) for k, v in row.items()}
            user = record.get("user", record.get("username"))
            line = json.dumps(record, allow_nan=False, sort_keys=True).encode("utf-8")
            key = str(user).encode("utf-8") if user is not None else None
            futures.append(prod.send(out_topic, line, key=key))
        prod.flush(timeout=timeout_s)
        for fut in futures:
            fut.get(timeout=timeout_s)
    finally:
        if own:
            prod.close(timeout=5)
    log.info("published %d detections to %s", len(futures), out_topic)
    return len(futures)


def _jsonable(v: Any) -> Any:
    """One value as plain JSON data."""
    if v is None or isinstance(v, bool | str | int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "isoformat"):  # pandas Timestamp
        return v.isoformat()
    if hasattr(v, "item"):  # numpy scalar
        return _jsonable(v.item())
    if hasattr(v, "tolist"):  # numpy array
        return _jsonable(v.tolist())
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError, ImportError):
        pass
    return str(v)


def main(argv: list[str] | None = None) -> int:
    """CLI: validate each file and publish it; print each message id on its own line."""
    parser = argparse.ArgumentParser(description="Publish control messages to Kafka.")
    parser.add_argument("files", nargs="+", type=Path, help="control message JSON files")
    parser.add_argument("--topic", help="topic (default: settings.kafka_control_topic)")
    parser.add_argument(
        "--keep-id",
        action="store_true",
        help="do not assign a fresh id to a message without one (its id is its content hash)",
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    producer = make_producer(settings)
    status = 0
    try:
        for path in args.files:
            try:
                msg = parse_control_message(path)
            except ControlMessageError as exc:
                log.error("%s: %s", path, exc)
                status = 2
                continue
            mid = publish(
                msg.to_dict(),
                settings,
                topic=args.topic,
                assign_id=not args.keep_id,
                producer=producer,
            )
            sys.stdout.write(f"{mid}\n")
    finally:
        producer.close(timeout=5)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
