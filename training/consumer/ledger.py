"""The idempotency ledger: (message id, deployment) → flow run id, and dead-lettered positions.

A SQLAlchemy table (SQLite under ``run_dir`` unless ``settings.consumer_ledger_url`` says
otherwise): a redelivered message finds its run here and starts no second one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    select,
    tuple_,
)
from sqlalchemy.exc import IntegrityError

from secml.settings import Settings

log = logging.getLogger(__name__)


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
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.dispatches)).scalar())

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def ledger_url(settings: Settings) -> str:
    """The idempotency ledger's database URL (SQLite under run_dir unless configured)."""
    if settings.consumer_ledger_url:
        return settings.consumer_ledger_url
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{settings.run_dir / 'consumer-ledger.db'}"
