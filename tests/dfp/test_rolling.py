"""Rolling window: payload skips it; streaming caches per user on disk and triggers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from secml.dfp.rolling import UserCache, WindowOptions, rolling_window
from secml.dfp.schema import process_records
from secml.naming import GENERIC_USER

USER = "carol/ops@example.com"


def _user_rows(frame: pd.DataFrame, user: str = USER) -> pd.DataFrame:
    """One user's rows, in time order."""
    return frame[frame["username"] == user].reset_index(drop=True)


def test_payload_skips_the_window(tmp_path: Path, small_duo_frame: pd.DataFrame) -> None:
    """Payload data passes through unchanged and touches no cache."""
    rows = _user_rows(small_duo_frame)
    out = rolling_window(
        rows,
        USER,
        "duo",
        data_type="payload",
        cache_dir=tmp_path,
        options=WindowOptions(min_history=1000),
    )
    assert out is rows
    assert list(tmp_path.iterdir()) == []


def test_streaming_triggers_at_minimum_then_on_increment(
    tmp_path: Path, small_duo_frame: pd.DataFrame
) -> None:
    """No window below min_history; a window at it; the next only after min_increment more."""
    rows = _user_rows(small_duo_frame)  # 40 events
    opts = WindowOptions(min_history=20, min_increment=10, max_history="365d")
    kw = {"data_type": "streaming", "cache_dir": tmp_path, "options": opts}
    assert rolling_window(rows.iloc[:19], USER, "duo", **kw) is None
    first = rolling_window(rows.iloc[19:20], USER, "duo", **kw)
    assert first is not None and len(first) == 20
    assert list(first["event_id"]) == list(rows["event_id"].iloc[:20])
    assert rolling_window(rows.iloc[20:29], USER, "duo", **kw) is None  # 9 new
    again = rolling_window(rows.iloc[:29], USER, "duo", **kw)  # duplicates only: nothing new
    assert again is None
    second = rolling_window(rows.iloc[29:30], USER, "duo", **kw)  # 10 new
    assert second is not None and len(second) == 30
    cache = UserCache(tmp_path, "duo", USER)
    assert cache.records_path.exists() and "/" not in cache.records_path.name


def test_window_recomputes_daily_features(tmp_path: Path, small_duo_frame: pd.DataFrame) -> None:
    """Derived counts in the window see the whole cached history, not just the last batch."""
    rows = _user_rows(small_duo_frame)
    opts = WindowOptions(min_history=1, min_increment=1)
    kw = {"data_type": "streaming", "cache_dir": tmp_path, "options": opts}
    rolling_window(rows.iloc[:5], USER, "duo", **kw)
    later = process_records(list(rows["_raw"].iloc[5:10]), "duo")  # batch-local counts
    assert later["logcount"].iloc[0] == 1
    window = rolling_window(later, USER, "duo", **kw)
    assert window is not None
    expected = process_records(list(rows["_raw"].iloc[:10]), "duo")
    assert list(window["logcount"]) == list(expected["logcount"])


def test_bounded_span(tmp_path: Path, small_duo_frame: pd.DataFrame) -> None:
    """The cache keeps at most max_history (a span or a row count)."""
    rows = _user_rows(small_duo_frame)
    days = WindowOptions(min_history=1, min_increment=1, max_history="1d")
    out = rolling_window(
        rows, USER, "duo", data_type="streaming", cache_dir=tmp_path / "a", options=days
    )
    assert out is not None
    assert out["timestamp"].max() - out["timestamp"].min() < pd.Timedelta("1d")
    count = WindowOptions(min_history=1, min_increment=1, max_history=7)
    out = rolling_window(
        rows, USER, "duo", data_type="streaming", cache_dir=tmp_path / "b", options=count
    )
    assert out is not None and len(out) == 7
    cached, _ = UserCache(tmp_path / "b", "duo", USER).load()
    assert len(cached) == 7


def test_generic_cache_and_errors(tmp_path: Path, small_duo_frame: pd.DataFrame) -> None:
    """The generic model has its own cache; bad options and corrupt caches are named."""
    opts = WindowOptions(min_history=10, min_increment=10)
    out = rolling_window(
        small_duo_frame,
        GENERIC_USER,
        "duo",
        data_type="streaming",
        cache_dir=tmp_path,
        options=opts,
    )
    assert out is not None and len(out) == len(small_duo_frame)
    with pytest.raises(ValueError, match="data_type"):
        rolling_window(small_duo_frame, USER, "duo", data_type="batch", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cache_dir"):
        rolling_window(small_duo_frame, USER, "duo", data_type="streaming")
    with pytest.raises(ValueError, match="max_history"):
        WindowOptions(max_history="soon")
    with pytest.raises(ValueError, match="min_history"):
        WindowOptions(min_history=-1)
    cache = UserCache(tmp_path, "duo", GENERIC_USER)
    cache.records_path.write_text('{"ok": 1}\n{broken\n')
    with pytest.raises(ValueError, match="line 2 is corrupt"):
        rolling_window(
            small_duo_frame,
            GENERIC_USER,
            "duo",
            data_type="streaming",
            cache_dir=tmp_path,
            options=opts,
        )
