"""Rolling window before training: payload data passes through; streaming data is cached.

Streaming (``data_type="streaming"``): each user's raw records are appended to a per-user
cache on disk (``<cache_dir>/<source>/<model-name>.jsonl``, de-duplicated by ``event_id``)
and pruned to a bounded span (``max_history``: a time span such as ``"30d"`` or a row count).
A window is emitted only when the cache holds at least ``min_history`` events and at least
``min_increment`` new events arrived since the last emitted window; the emitted window is
re-processed by the schema so the derived per-day features see the whole history.
Payload (``data_type="payload"``): the batch is returned unchanged; no cache is touched.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from secml.dfp.schema import check_source, frame_from_records, process
from secml.naming import user_to_model_name

log = logging.getLogger(__name__)

DataType = Literal["payload", "streaming"]


@dataclass(frozen=True)
class WindowOptions:
    """Triggers and bounds of the streaming window."""

    min_history: int = 300
    min_increment: int = 300
    max_history: str | int = "60d"

    def __post_init__(self) -> None:
        """Refuse negative counts and unparseable spans, naming the option."""
        if self.min_history < 0 or self.min_increment < 0:
            raise ValueError("rolling window: min_history and min_increment must be >= 0")
        if isinstance(self.max_history, int):
            if self.max_history < 1:
                raise ValueError("rolling window: max_history as a row count must be >= 1")
        else:
            try:
                span = pd.Timedelta(self.max_history)
            except ValueError as exc:
                raise ValueError(
                    f"rolling window: max_history {self.max_history!r} is neither a row count "
                    "nor a time span like '30d'"
                ) from exc
            if span <= pd.Timedelta(0):
                raise ValueError("rolling window: max_history must be a positive span")


class UserCache:
    """One user's cached raw records and trigger state on disk."""

    def __init__(self, cache_dir: Path, source: str, user: str) -> None:
        """Locate the cache files of ``user`` (created on first write)."""
        base = Path(cache_dir) / source
        name = user_to_model_name(source, user)
        self.records_path = base / f"{name}.jsonl"
        self.state_path = base / f"{name}.state.json"

    def load(self) -> tuple[list[dict], dict]:
        """Cached records and state (``{"emitted_rows": n}`` after the first window)."""
        records: list[dict] = []
        if self.records_path.exists():
            with self.records_path.open(encoding="utf-8") as fh:
                for n, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            records.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise ValueError(
                                f"rolling-window cache {self.records_path} line {n} is corrupt "
                                f"({exc.msg}); delete the file to rebuild it"
                            ) from None
        state = {}
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        return records, state

    def save(self, records: list[dict], state: dict) -> None:
        """Write records and state atomically (temp file + rename)."""
        self.records_path.parent.mkdir(parents=True, exist_ok=True)
        for path, text in (
            (self.records_path, "".join(json.dumps(r) + "\n" for r in records)),
            (self.state_path, json.dumps(state)),
        ):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)


def _bound(df: pd.DataFrame, max_history: str | int) -> pd.DataFrame:
    """Keep the last ``max_history`` rows, or the rows within that span of the newest."""
    if df.empty:
        return df
    if isinstance(max_history, int):
        return df.iloc[-max_history:]
    newest = df["timestamp"].max()
    return df[df["timestamp"] > newest - pd.Timedelta(max_history)]


def rolling_window(
    user_df: pd.DataFrame,
    user: str,
    source: str,
    *,
    data_type: DataType,
    cache_dir: Path | str | None = None,
    options: WindowOptions | None = None,
) -> pd.DataFrame | None:
    """Training rows for ``user`` now: the batch (payload), a window, or None (not triggered)."""
    check_source(source)
    if data_type == "payload":
        return user_df
    if data_type != "streaming":
        raise ValueError(f"data_type must be 'payload' or 'streaming', got {data_type!r}")
    if cache_dir is None:
        raise ValueError("streaming data needs a rolling-window cache_dir")
    opts = options or WindowOptions()
    cache = UserCache(Path(cache_dir), source, user)
    records, state = cache.load()
    cached = process(frame_from_records(records, file=str(cache.records_path)), source)
    seen = set(cached["event_id"])
    new = user_df[~user_df["event_id"].isin(seen)].drop_duplicates("event_id")
    if len(new):
        merged_raw = pd.concat(
            [cached[["_raw", "_file", "_index"]], new[["_raw", "_file", "_index"]]],
            ignore_index=True,
        )
        merged = process(merged_raw, source)
    else:
        merged = cached
    window = _bound(merged, opts.max_history)
    emitted = int(state.get("emitted_rows", 0))
    added = int(state.get("added_since", 0)) + len(new)
    total = len(window)
    trigger = total > 0 and total >= opts.min_history
    trigger = trigger and (emitted == 0 or added >= opts.min_increment)
    if trigger:
        state = {"emitted_rows": total, "added_since": 0}
    else:
        state = {"emitted_rows": emitted, "added_since": added}
    cache.save(list(window["_raw"]), state)
    if not trigger:
        log.debug(
            "window %s/%s: %d rows, %d new since last window: not triggered",
            source,
            user,
            total,
            added,
        )
        return None
    log.info("window %s/%s: %d rows (%d new) -> train", source, user, total, added)
    return window.reset_index(drop=True)
