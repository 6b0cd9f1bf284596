"""Detections store: every anomaly scored by the gateway or a batch pipeline, and its labels.

SQLAlchemy over SQLite (local default, ``settings.store_url``) or PostgreSQL (compose).
Three tables: ``detections`` (one row per scored anomaly, with the raw record, score, model
version and details such as the top features), ``labels`` (append-only label events; the
latest event of a detection is its label) and ``user_state`` (each DFP user's history state,
``secml.dfp.history``, updated by every scored login so batch and online scoring share it).
Analysts label in the UI; training reads ``labelled()`` to feed labels back into the next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("true_positive", "false_positive")
Label = Literal["true_positive", "false_positive"]

DETECTION_COLUMNS = [
    "detection_id",
    "detector",
    "source",
    "event_id",
    "user",
    "event_time",
    "score",
    "is_anomaly",
    "model_version",
    "record",
    "details",
    "created_at",
]
LABELLED_COLUMNS = DETECTION_COLUMNS + ["label", "labelled_by", "labelled_at", "note"]
_REQUIRED = ("detector", "source", "record", "score", "model_version")


class StoreError(ValueError):
    """A row or label given to the store is malformed; the message names what is wrong."""


def event_id(record: Mapping[str, Any]) -> str:
    """Stable id of a raw record: sha256 of its canonical JSON (sorted keys, compact)."""
    canonical = json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _utc(value: Any, where: str) -> datetime | None:
    """Parse ``value`` (datetime, ISO string, epoch seconds, None) into an aware UTC datetime."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            ts = pd.Timestamp(value, unit="s", tz="UTC")
        else:
            ts = pd.Timestamp(value)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (ValueError, TypeError) as exc:
        raise StoreError(f"{where}: cannot parse time {value!r} ({exc})") from exc
    if pd.isna(ts):
        return None
    return ts.to_pydatetime()


def _as_utc(value: Any) -> Any:
    """Database datetimes come back naive on SQLite: mark them UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class DetectionStore:
    """Detections and their label events in one SQL database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, table_prefix: str = "", create: bool = True) -> None:
        """Connect to ``url``; ``table_prefix`` keeps test tables apart; create missing tables."""
        self.url = url
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            self._ensure_sqlite_dir(url)
        self.engine: Engine = create_engine(url, **kwargs)
        self.metadata = MetaData()
        p = table_prefix
        self.table_prefix = p
        self.t_det = Table(
            f"{p}detections",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("detector", String(32), nullable=False, index=True),
            Column("source", String(32), nullable=False, index=True),
            Column("event_id", String(64), nullable=False, index=True),
            Column("user", String(256), nullable=True, index=True),
            Column("event_time", DateTime(timezone=True), nullable=True, index=True),
            Column("score", Float, nullable=False),
            Column("is_anomaly", Boolean, nullable=False, default=True),
            Column("model_version", String(512), nullable=False),
            Column("record", JSON, nullable=False),
            Column("details", JSON, nullable=True),
            Column("created_at", DateTime(timezone=True), nullable=False),
        )
        self.t_lab = Table(
            f"{p}labels",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column(
                "detection_id",
                Integer,
                ForeignKey(f"{p}detections.id", ondelete="CASCADE"),
                nullable=False,
                index=True,
            ),
            Column("label", String(32), nullable=False),
            Column("user", String(256), nullable=False),
            Column("note", Text, nullable=False, default=""),
            Column("created_at", DateTime(timezone=True), nullable=False),
        )
        self.t_state = Table(
            f"{p}user_state",
            self.metadata,
            Column("source", String(32), primary_key=True),
            Column("user", String(256), primary_key=True),
            Column("state", JSON, nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False),
        )
        self._lock = threading.Lock()
        if create:
            self.create_tables()

    @staticmethod
    def _ensure_sqlite_dir(url: str) -> None:
        """Create the parent directory of a file-backed SQLite database."""
        from pathlib import Path

        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    def create_tables(self) -> None:
        """Create the tables if they do not exist (idempotent)."""
        self.metadata.create_all(self.engine)

    def drop_tables(self) -> None:
        """Drop this store's tables (tests)."""
        self.metadata.drop_all(self.engine)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception as exc:  # noqa: BLE001 - any driver error means "not reachable"
            log.warning("store not reachable: %s", exc)
            return False

    def close(self) -> None:
        """Dispose of the connection pool."""
        self.engine.dispose()

    # ------------------------------------------------------------------ per-user state
    def load_user_states(self, source: str, users: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored DFP history state (``secml.dfp.history.UserState`` data) of ``users``."""
        names = sorted({str(u) for u in users})
        out: dict[str, dict[str, Any]] = {}
        t = self.t_state
        with self.engine.connect() as conn:
            for i in range(0, len(names), 500):
                q = select(t.c.user, t.c.state).where(
                    t.c.source == source, t.c.user.in_(names[i : i + 500])
                )
                out.update({row.user: row.state for row in conn.execute(q)})
        return out

    def delete_user_states(self, source: str, users: Iterable[str] | None = None) -> int:
        """Forget the history state of ``users`` (every user of ``source`` when None)."""
        t = self.t_state
        q = t.delete().where(t.c.source == source)
        if users is not None:
            q = q.where(t.c.user.in_(sorted({str(u) for u in users})))
        with self._lock, self.engine.begin() as conn:
            return int(conn.execute(q).rowcount or 0)

    def save_user_states(
        self, source: str, states: Mapping[str, Mapping[str, Any]], *, only_new: bool = False
    ) -> int:
        """Insert or replace users' states in one transaction; ``only_new`` keeps stored ones.

        Returns how many states were written.
        """
        if not states:
            return 0
        now = datetime.now(UTC)
        t = self.t_state
        with self._lock, self.engine.begin() as conn:
            have = {
                row.user
                for row in conn.execute(
                    select(t.c.user).where(t.c.source == source, t.c.user.in_(list(states)))
                )
            }
            new = [u for u in states if u not in have]
            old = [] if only_new else [u for u in states if u in have]
            if new:
                conn.execute(
                    insert(t),
                    [
                        {"source": source, "user": u, "state": dict(states[u]), "updated_at": now}
                        for u in new
                    ],
                )
            for u in old:
                conn.execute(
                    t.update()
                    .where(t.c.source == source, t.c.user == u)
                    .values(state=dict(states[u]), updated_at=now)
                )
        return len(new) + len(old)

    # -- writing ---------------------------------------------------------------------------
    def _row(self, i: int, row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
        """Validate one detection row and turn it into a table row."""
        if not isinstance(row, Mapping):
            raise StoreError(f"row {i}: expected a dict, got {type(row).__name__}")
        missing = [k for k in _REQUIRED if k not in row or row[k] is None]
        if missing:
            raise StoreError(f"row {i}: missing field(s) {', '.join(missing)}")
        record = row["record"]
        if not isinstance(record, Mapping):
            raise StoreError(f"row {i}: field 'record' must be a dict (the raw record)")
        try:
            score = float(row["score"])
        except (TypeError, ValueError) as exc:
            raise StoreError(f"row {i}: field 'score' is not a number: {row['score']!r}") from exc
        if not math.isfinite(score):
            raise StoreError(f"row {i}: field 'score' must be finite, got {score}")
        record = json.loads(json.dumps(record, default=str))
        details = row.get("details")
        if details is not None:
            details = json.loads(json.dumps(details, default=str))
        user = row.get("user")
        return {
            "detector": str(row["detector"]),
            "source": str(row["source"]),
            "event_id": str(row.get("event_id") or event_id(record)),
            "user": None if user is None else str(user),
            "event_time": _utc(row.get("event_time"), f"row {i}: field 'event_time'"),
            "score": score,
            "is_anomaly": bool(row.get("is_anomaly", True)),
            "model_version": str(row["model_version"]),
            "record": record,
            "details": details,
            "created_at": now,
        }

    def add_detections(self, rows: Iterable[Mapping[str, Any]]) -> list[int]:
        """Insert detections; return their ids in order. All rows are validated first."""
        now = datetime.now(UTC)
        values = [self._row(i, r, now) for i, r in enumerate(rows)]
        if not values:
            return []
        stmt = insert(self.t_det).returning(self.t_det.c.id, sort_by_parameter_order=True)
        with self._lock, self.engine.begin() as conn:
            return [int(r[0]) for r in conn.execute(stmt, values)]

    def add_label(self, detection_id: int, label: Label, user: str, note: str = "") -> None:
        """Append a label event (the latest event is the detection's label)."""
        if label not in LABELS:
            raise StoreError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
        if not user or not str(user).strip():
            raise StoreError("label: field 'user' (who labels) must not be empty")
        with self._lock, self.engine.begin() as conn:
            found = conn.execute(
                select(self.t_det.c.id).where(self.t_det.c.id == int(detection_id))
            ).first()
            if found is None:
                raise KeyError(f"no detection with id {detection_id}")
            conn.execute(
                insert(self.t_lab).values(
                    detection_id=int(detection_id),
                    label=label,
                    user=str(user),
                    note=note or "",
                    created_at=datetime.now(UTC),
                )
            )

    # -- reading ---------------------------------------------------------------------------
    def _det_frame(self, rows: list[Any], extra: list[str] | None = None) -> pd.DataFrame:
        """Build a DataFrame of detections (plus ``extra`` columns) from result rows."""
        cols = DETECTION_COLUMNS + (extra or [])
        data = []
        for r in rows:
            m = dict(r._mapping)
            m["detection_id"] = m.pop("id")
            data.append({c: _as_utc(m.get(c)) for c in cols})
        df = pd.DataFrame(data, columns=cols)
        for c in ("event_time", "created_at", "labelled_at"):
            if c in df.columns:
                df[c] = pd.to_datetime(df[c], utc=True)
        return df

    def detections(
        self,
        detector: str | None = None,
        source: str | None = None,
        user: str | None = None,
        since: Any = None,
        until: Any = None,
        min_score: float | None = None,
        limit: int | None = 1000,
        anomalies_only: bool = False,
    ) -> pd.DataFrame:
        """Detections matching the filters, newest first, with their current label (or None)."""
        d, lab = self.t_det, self.t_lab
        latest = (
            select(lab.c.detection_id, func.max(lab.c.id).label("lid"))
            .group_by(lab.c.detection_id)
            .subquery()
        )
        q = (
            select(
                d,
                lab.c.label,
                lab.c.user.label("labelled_by"),
                lab.c.created_at.label("labelled_at"),
                lab.c.note,
            )
            .select_from(
                d.outerjoin(latest, latest.c.detection_id == d.c.id).outerjoin(
                    lab, lab.c.id == latest.c.lid
                )
            )
            .order_by(d.c.id.desc())
        )
        if detector is not None:
            q = q.where(d.c.detector == detector)
        if source is not None:
            q = q.where(d.c.source == source)
        if user is not None:
            q = q.where(d.c.user == user)
        if since is not None:
            q = q.where(d.c.event_time >= _utc(since, "since"))
        if until is not None:
            q = q.where(d.c.event_time < _utc(until, "until"))
        if min_score is not None:
            q = q.where(d.c.score >= float(min_score))
        if anomalies_only:
            q = q.where(d.c.is_anomaly.is_(True))
        if limit is not None:
            q = q.limit(int(limit))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return self._det_frame(rows, ["label", "labelled_by", "labelled_at", "note"])

    def labelled(self, detector: str, source: str | None = None) -> pd.DataFrame:
        """Labelled detections of ``detector`` (and ``source``) with their latest label."""
        df = self.detections(detector=detector, source=source, limit=None)
        return df[df["label"].notna()].reset_index(drop=True)[LABELLED_COLUMNS]

    def labels_history(self, detection_id: int) -> pd.DataFrame:
        """Every label event of one detection, oldest first."""
        lab = self.t_lab
        q = select(lab).where(lab.c.detection_id == int(detection_id)).order_by(lab.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        data = [
            {
                "label_id": r.id,
                "detection_id": r.detection_id,
                "label": r.label,
                "labelled_by": r.user,
                "note": r.note,
                "labelled_at": _as_utc(r.created_at),
            }
            for r in rows
        ]
        cols = ["label_id", "detection_id", "label", "labelled_by", "note", "labelled_at"]
        df = pd.DataFrame(data, columns=cols)
        df["labelled_at"] = pd.to_datetime(df["labelled_at"], utc=True)
        return df

    def count(self, detector: str | None = None) -> int:
        """Number of detections (of ``detector``)."""
        q = select(func.count()).select_from(self.t_det)
        if detector is not None:
            q = q.where(self.t_det.c.detector == detector)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())


_default: DetectionStore | None = None


def get_store() -> DetectionStore:
    """The process-wide store at ``settings.store_url`` (created on first use)."""
    global _default
    from secml.settings import get_settings

    url = get_settings().store_url
    assert url is not None
    if _default is None or _default.url != url:
        _default = DetectionStore(url)
    return _default
