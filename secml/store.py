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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    create_engine,
    func,
    insert,
    literal,
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
# an event: the detection columns up to ``score`` (its latest detection, its highest score), then
EVENT_COLUMNS = DETECTION_COLUMNS[: DETECTION_COLUMNS.index("score") + 1] + [
    "n_detections",
    "first_seen",
    "last_seen",
    "model_version",
    "label",
    "labelled_by",
    "labelled_at",
]
# How ``events`` may sort: name -> column of the grouped query.
EVENT_SORTS: tuple[str, ...] = ("last_seen", "score", "event_time", "n_detections", "user")
# ``events(label=...)``: a label, or one of these.
LABEL_FILTERS: tuple[str, ...] = ("unlabelled", "labelled", *LABELS)
MAX_PAGE_SIZE = 500


class StoreError(ValueError):
    """A row or label given to the store is malformed; the message names what is wrong."""


def _json_text(value: Any) -> str:
    """``value`` as JSON text (what the JSON columns hold): orjson, with anything it cannot
    represent as a string (``default=str``); NaN and infinities become null, which strict JSON
    readers (PostgreSQL's too) accept. Integers beyond 64 bits and non-string keys go through
    the standard library instead."""
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return json.dumps(value, default=str)


def _json_value(text: str | bytes) -> Any:
    """JSON column text as a value: orjson, or the standard library for text orjson refuses
    (rows written before the store used orjson may hold ``NaN``)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


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


@dataclass(frozen=True)
class EventPage:
    """One page of events (duplicates of a record grouped), and how many match in all."""

    rows: pd.DataFrame
    total: int
    page: int
    page_size: int

    @property
    def pages(self) -> int:
        """Number of pages for ``total`` events (at least 1)."""
        return max(1, math.ceil(self.total / self.page_size))


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
        # JSON columns read and written with orjson (bench/bench_store.py)
        kwargs |= {"json_serializer": _json_text, "json_deserializer": _json_value}
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
        # Grouping detections into events reads only this index (it covers every column the
        # grouping aggregates): 3-5x faster than visiting the table rows at 100,000 detections.
        d = self.t_det
        self._indexes = [
            Index(f"ix_{p}detections_event_cover", d.c.detector, d.c.source, d.c.event_id,
                  d.c.score, d.c.event_time, d.c.created_at, d.c.user),
            Index(f"ix_{p}detections_created", d.c.created_at),
        ]  # fmt: skip
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
        """Create the tables and indexes if they do not exist (idempotent, older files too)."""
        self.metadata.create_all(self.engine)
        for index in self._indexes:  # tables made by an older version lack the new ones
            index.create(self.engine, checkfirst=True)

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
            if old:  # one executemany, not one statement per user
                conn.execute(
                    t.update()
                    .where(t.c.source == source, t.c.user == bindparam("b_user"))
                    .values(state=bindparam("b_state", type_=t.c.state.type), updated_at=now),
                    [{"b_user": u, "b_state": dict(states[u])} for u in old],
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
        user = row.get("user")
        # the record and details go to the JSON columns as given: their serializer
        # (_json_text) writes what JSON lacks as text; an id is computed from the record as
        # those columns give it back (string keys, so sorting them cannot fail)
        eid = row.get("event_id") or event_id(_json_value(_json_text(record)))
        return {
            "detector": str(row["detector"]),
            "source": str(row["source"]),
            "event_id": str(eid),
            "user": None if user is None else str(user),
            "event_time": _utc(row.get("event_time"), f"row {i}: field 'event_time'"),
            "score": score,
            "is_anomaly": bool(row.get("is_anomaly", True)),
            "model_version": str(row["model_version"]),
            "record": record,
            "details": row.get("details"),
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
        return self._label_frame(rows)

    @staticmethod
    def _label_frame(rows: list[Any]) -> pd.DataFrame:
        """Label events as a DataFrame (``labels_history`` columns)."""
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

    # -- events: one row per record, however often it was scored ---------------------------
    def _event_label(self) -> Any:
        """Subquery: the latest label event of each (detector, source, event_id)."""
        d, lab = self.t_det, self.t_lab
        latest = (
            select(
                d.c.detector.label("l_detector"),
                d.c.source.label("l_source"),
                d.c.event_id.label("l_event_id"),
                func.max(lab.c.id).label("lid"),
            )
            .select_from(lab.join(d, d.c.id == lab.c.detection_id))
            .group_by(d.c.detector, d.c.source, d.c.event_id)
            .subquery("ev_latest_label")
        )
        return latest

    def _event_query(
        self,
        detectors: Iterable[str] | None,
        sources: Iterable[str] | None,
        users: Iterable[str] | None,
        user_contains: str | None,
        since: Any,
        until: Any,
        min_score: float | None,
        label: str | None,
    ) -> Any:
        """The grouped, label-joined events query (no order, no paging) as a subquery."""
        d, lab = self.t_det, self.t_lab
        g = select(
            d.c.detector,
            d.c.source,
            d.c.event_id,
            func.count().label("n_detections"),
            func.max(d.c.id).label("detection_id"),
            func.max(d.c.score).label("score"),
            func.max(d.c.event_time).label("event_time"),
            func.max(d.c.user).label("user"),
            func.min(d.c.created_at).label("first_seen"),
            func.max(d.c.created_at).label("last_seen"),
        ).group_by(d.c.detector, d.c.source, d.c.event_id)
        for col, wanted in ((d.c.detector, detectors), (d.c.source, sources), (d.c.user, users)):
            values = sorted({str(v) for v in wanted or ()})
            if values:
                g = g.where(col.in_(values))
        if user_contains:
            g = g.where(d.c.user.icontains(str(user_contains), autoescape=True))
        if since is not None:
            g = g.where(d.c.event_time >= _utc(since, "since"))
        if until is not None:
            g = g.where(d.c.event_time < _utc(until, "until"))
        if min_score is not None:
            g = g.having(func.max(d.c.score) >= float(min_score))
        ev = g.subquery("ev")
        latest = self._event_label()
        q = select(
            ev,
            lab.c.label,
            lab.c.user.label("labelled_by"),
            lab.c.created_at.label("labelled_at"),
        ).select_from(
            ev.outerjoin(
                latest,
                and_(
                    latest.c.l_detector == ev.c.detector,
                    latest.c.l_source == ev.c.source,
                    latest.c.l_event_id == ev.c.event_id,
                ),
            ).outerjoin(lab, lab.c.id == latest.c.lid)
        )
        if label is not None:
            if label not in LABEL_FILTERS:
                raise StoreError(f"label filter must be one of {', '.join(LABEL_FILTERS)}, "
                                 f"got {label!r}")  # fmt: skip
            if label == "unlabelled":
                q = q.where(latest.c.lid.is_(None))
            elif label == "labelled":
                q = q.where(latest.c.lid.is_not(None))
            else:
                q = q.where(lab.c.label == label)
        return q.subquery("events")

    def events(
        self,
        *,
        detectors: Iterable[str] | None = None,
        sources: Iterable[str] | None = None,
        users: Iterable[str] | None = None,
        user_contains: str | None = None,
        since: Any = None,
        until: Any = None,
        min_score: float | None = None,
        label: str | None = None,
        sort: str = "last_seen",
        descending: bool = True,
        page: int = 1,
        page_size: int = 50,
    ) -> EventPage:
        """One page of events: each scored record once, its detections counted, newest first.

        Detections of the same record (same ``detector``, ``source``, ``event_id``) form one
        event: ``score`` is the highest, ``detection_id`` the latest detection, ``label`` the
        latest label given to any of them. Filters, sorting and paging run in the database.
        ``label`` is ``unlabelled``, ``labelled``, ``true_positive`` or ``false_positive``.
        """
        if sort not in EVENT_SORTS:
            raise StoreError(f"sort must be one of {', '.join(EVENT_SORTS)}, got {sort!r}")
        if not 1 <= int(page_size) <= MAX_PAGE_SIZE:
            raise StoreError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        if int(page) < 1:
            raise StoreError(f"page must be 1 or more, got {page}")
        page, page_size = int(page), int(page_size)
        ev = self._event_query(
            detectors, sources, users, user_contains, since, until, min_score, label
        )
        key = ev.c[sort]
        order = [key.desc() if descending else key.asc(), ev.c.detection_id.desc()]
        if sort in ("event_time", "user"):  # missing values last either way
            order.insert(0, key.is_(None))
        d = self.t_det
        # the total rides along as a window count: the grouping runs once, not twice
        paged = (
            select(ev, func.count().over().label("_total"))
            .order_by(*order)
            .limit(page_size)
            .offset((page - 1) * page_size)
            .subquery("paged")
        )
        key = paged.c[sort]
        order = [key.desc() if descending else key.asc(), paged.c.detection_id.desc()]
        if sort in ("event_time", "user"):
            order.insert(0, key.is_(None))
        q = (
            select(paged, d.c.model_version)
            .select_from(paged.join(d, d.c.id == paged.c.detection_id))
            .order_by(*order)
        )
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
            if rows:
                total = int(rows[0]["_total"])
            else:  # past the last page (or nothing matches): count on its own
                total = int(conn.execute(select(func.count()).select_from(ev)).scalar_one())
        data = [{c: _as_utc(r.get(c)) for c in EVENT_COLUMNS} for r in rows]
        df = pd.DataFrame(data, columns=EVENT_COLUMNS)
        for c in ("event_time", "first_seen", "last_seen", "labelled_at"):
            df[c] = pd.to_datetime(df[c], utc=True)
        df["n_detections"] = df["n_detections"].astype("int64")
        return EventPage(df, total, page, page_size)

    def event_key(self, detection_id: int) -> tuple[str, str, str]:
        """``(detector, source, event_id)`` of a detection; KeyError when there is none."""
        d = self.t_det
        q = select(d.c.detector, d.c.source, d.c.event_id).where(d.c.id == int(detection_id))
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            raise KeyError(f"no detection with id {detection_id}")
        return str(row.detector), str(row.source), str(row.event_id)

    def event_detections(self, detection_id: int) -> pd.DataFrame:
        """Every detection of the event ``detection_id`` belongs to, newest first, with the
        event's label (the latest given to any of them) on each row."""
        det, src, eid = self.event_key(detection_id)
        d = self.t_det
        q = (
            select(d)
            .where(d.c.detector == det, d.c.source == src, d.c.event_id == eid)
            .order_by(d.c.id.desc())
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        df = self._det_frame(rows)
        hist = self.event_labels(detection_id)
        last = hist.iloc[-1] if len(hist) else None
        df["label"] = None if last is None else last["label"]
        df["labelled_by"] = None if last is None else last["labelled_by"]
        df["labelled_at"] = pd.NaT if last is None else last["labelled_at"]
        df["labelled_at"] = pd.to_datetime(df["labelled_at"], utc=True)
        return df

    def event_labels(self, detection_id: int) -> pd.DataFrame:
        """Every label event given to any detection of the event, oldest first."""
        det, src, eid = self.event_key(detection_id)
        d, lab = self.t_det, self.t_lab
        q = (
            select(lab)
            .select_from(lab.join(d, d.c.id == lab.c.detection_id))
            .where(d.c.detector == det, d.c.source == src, d.c.event_id == eid)
            .order_by(lab.c.id)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return self._label_frame(rows)

    def label_event(self, detection_id: int, label: Label, user: str, note: str = "") -> int:
        """Label the event of ``detection_id`` once: the event's latest detection carries it.

        Returns the id of the detection that got the label event (training reads that one, so a
        record scored 45 times is one training row, not 45).
        """
        det, src, eid = self.event_key(detection_id)
        d = self.t_det
        q = select(func.max(d.c.id)).where(
            d.c.detector == det, d.c.source == src, d.c.event_id == eid
        )
        with self.engine.connect() as conn:
            latest = int(conn.execute(q).scalar_one())
        self.add_label(latest, label, user, note)
        return latest

    def summary(self) -> pd.DataFrame:
        """Per detector: detections, events, unlabelled events and events per label."""
        ev = self._event_query(None, None, None, None, None, None, None, None)
        labelled = ev.c.label.is_not(None)
        q = (
            select(
                ev.c.detector,
                func.sum(ev.c.n_detections).label("detections"),
                func.count().label("events"),
                func.sum(case((labelled, 0), else_=1)).label("unlabelled"),
                func.sum(case((ev.c.label == "true_positive", 1), else_=0)).label("true_positive"),
                func.sum(case((ev.c.label == "false_positive", 1), else_=0)).label(
                    "false_positive"
                ),
            )
            .group_by(ev.c.detector)
            .order_by(ev.c.detector)
        )
        cols = ["detector", "detections", "events", "unlabelled", "true_positive",
                "false_positive"]  # fmt: skip
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        df = pd.DataFrame(rows, columns=cols)
        for c in cols[1:]:
            df[c] = pd.to_numeric(df[c]).fillna(0).astype("int64")
        return df

    def timeline(
        self,
        bucket: Literal["hour", "day"] = "hour",
        since: Any = None,
        until: Any = None,
        detector: str | None = None,
    ) -> pd.DataFrame:
        """Detections per ``bucket`` of event time (stored time when the event has none),
        per detector: columns ``time`` (UTC bucket start), ``detector``, ``detections``."""
        if bucket not in ("hour", "day"):
            raise StoreError(f"bucket must be 'hour' or 'day', got {bucket!r}")
        d = self.t_det
        when = func.coalesce(d.c.event_time, d.c.created_at)
        if self.engine.dialect.name == "sqlite":
            fmt = "%Y-%m-%d %H:00:00" if bucket == "hour" else "%Y-%m-%d 00:00:00"
            slot = func.strftime(fmt, when)
        else:
            slot = func.date_trunc(literal(bucket), when)
        q = select(slot.label("time"), d.c.detector, func.count().label("detections"))
        if detector is not None:
            q = q.where(d.c.detector == detector)
        if since is not None:
            q = q.where(when >= _utc(since, "since"))
        if until is not None:
            q = q.where(when < _utc(until, "until"))
        q = q.group_by(slot, d.c.detector).order_by(slot)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        df = pd.DataFrame(rows, columns=["time", "detector", "detections"])
        df["time"] = pd.to_datetime(df["time"], utc=True)
        df["detections"] = df["detections"].astype("int64")
        return df


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
