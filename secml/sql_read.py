"""Read-only queries against a database URL for long-running, otherwise light processes.

A SQLite file is read with the standard library (opened read-only), so a poll loop that only
reads the detections store never imports SQLAlchemy (~11 MiB of its RSS); any other database
(PostgreSQL) goes through one SQLAlchemy engine per URL. Parameters are named (``:name``), a
form both understand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

_engines: dict[str, Any] = {}


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///`` URL; None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return None
    return url.removeprefix("sqlite:///").split("?", 1)[0]


def fetch_all(url: str, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Every row of ``sql`` (a SELECT with ``:name`` parameters) run against ``url``."""
    path = sqlite_path(url)
    if path is not None:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=5)
        try:
            return [tuple(row) for row in conn.execute(sql, dict(params)).fetchall()]
        finally:
            conn.close()
    from sqlalchemy import create_engine, text

    engine = _engines.get(url) or _engines.setdefault(url, create_engine(url, pool_pre_ping=True))
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql), dict(params)).all()]
