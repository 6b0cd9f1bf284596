"""File batcher: group input files by period, keep a start/end window, optionally sample.

A file's time comes from its name (``DUO_2022-08-01T00_05_06.806Z.json``: any
``YYYY-MM-DDTHH_MM_SS(.fff)Z`` or ISO-like stamp in the name), else from its modification
time. ``period`` is a pandas frequency (``D``, ``6h``, ``W``); ``start_time`` is inclusive,
``end_time`` exclusive; ``sampling`` keeps a fraction (0 < x <= 1.0), a count (int >= 1) or one
file per interval (a frequency string such as ``"1h"``) of the files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import fsspec
import pandas as pd

from secml.dfp.loader import storage_options
from secml.settings import Settings

log = logging.getLogger(__name__)

_STAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[T_ ](?P<h>\d{2})[_:\-]?(?P<m>\d{2})[_:\-]?(?P<s>\d{2})"
    r"(?P<frac>\.\d{1,9})?(?P<tz>Z)?"
)


class BatchError(ValueError):
    """Bad batching options; the message names the option."""


@dataclass(frozen=True)
class Batch:
    """Files whose times fall in [start, end)."""

    start: pd.Timestamp
    end: pd.Timestamp
    files: list[str]


def time_from_name(path: str) -> pd.Timestamp | None:
    """The UTC time stamped in a file name, or None when the name carries none."""
    name = path.rsplit("/", 1)[-1]
    m = _STAMP.search(name)
    if not m:
        return None
    frac = m.group("frac") or ""
    try:
        return pd.Timestamp(
            f"{m.group('date')}T{m.group('h')}:{m.group('m')}:{m.group('s')}{frac}", tz="UTC"
        )
    except ValueError:
        return None


def file_time(path: str, settings: Settings | None = None) -> pd.Timestamp:
    """A file's time: from its name, else its modification time (UTC)."""
    ts = time_from_name(path)
    if ts is not None:
        return ts
    fs, _, (p,) = fsspec.get_fs_token_paths(path, storage_options=storage_options(path, settings))
    mtime = fs.modified(p)
    if not isinstance(mtime, datetime):
        mtime = pd.Timestamp(mtime)
    ts = pd.Timestamp(mtime)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _utc(value: str | datetime | pd.Timestamp | None, name: str) -> pd.Timestamp | None:
    """Parse a start/end option into a UTC timestamp."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise BatchError(f"batching option '{name}' is not a time: {value!r}") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _offset(period: str, name: str) -> pd.DateOffset:
    """A pandas frequency, or a BatchError naming the option."""
    try:
        return pd.tseries.frequencies.to_offset(period)
    except ValueError as exc:
        raise BatchError(f"batching option '{name}' is not a pandas frequency: {period!r}") from exc


def sample_files(
    files: pd.DataFrame, sampling: float | int | str | None, seed: int = 0
) -> pd.DataFrame:
    """Keep a fraction, a count, or the first file per interval of ``files`` (cols path, time)."""
    if sampling is None or len(files) == 0:
        return files
    if isinstance(sampling, bool):
        raise BatchError(f"batching option 'sampling' must be a number or frequency: {sampling!r}")
    if isinstance(sampling, str):
        try:
            sampling = float(sampling) if "." in sampling else int(sampling)
        except ValueError:
            off = _offset(sampling, "sampling")
            keys = files["time"].dt.floor(off) if hasattr(off, "nanos") else files["time"]
            return files.groupby(keys, sort=True).head(1)
    if isinstance(sampling, float) and sampling == 1.0:
        return files
    if isinstance(sampling, float) and 0 < sampling < 1:
        return files.sample(frac=sampling, random_state=seed).sort_values("time")
    if isinstance(sampling, (int, float)) and sampling >= 1 and float(sampling).is_integer():
        n = min(int(sampling), len(files))
        return files.sample(n=n, random_state=seed).sort_values("time")
    raise BatchError(
        f"batching option 'sampling' must be a fraction in (0, 1], a count >= 1 or a "
        f"frequency, got {sampling!r}"
    )


def batch_files(
    paths: Sequence[str],
    *,
    period: str = "D",
    start_time: str | datetime | None = None,
    end_time: str | datetime | None = None,
    sampling: float | int | str | None = None,
    seed: int = 0,
    settings: Settings | None = None,
) -> list[Batch]:
    """Group ``paths`` by ``period`` of their file time, within [start_time, end_time)."""
    off = _offset(period, "period")
    start = _utc(start_time, "start_time")
    end = _utc(end_time, "end_time")
    if start is not None and end is not None and end <= start:
        raise BatchError(f"batching option 'end_time' ({end}) must be after 'start_time' ({start})")
    files = pd.DataFrame(
        {"path": list(paths), "time": [file_time(p, settings) for p in paths]},
    )
    files["time"] = pd.to_datetime(files["time"], utc=True)
    if start is not None:
        files = files[files["time"] >= start]
    if end is not None:
        files = files[files["time"] < end]
    files = sample_files(files.sort_values(["time", "path"], kind="stable"), sampling, seed)
    batches: list[Batch] = []
    if files.empty:
        log.info("no files in the window %s .. %s", start, end)
        return batches
    try:
        keys = files["time"].dt.floor(off)
    except ValueError:  # non-fixed frequencies (W, MS): use periods
        keys = (
            files["time"].dt.tz_localize(None).dt.to_period(off).dt.start_time.dt.tz_localize("UTC")
        )
    for key, group in files.groupby(keys, sort=True):
        b_start = pd.Timestamp(key)
        batches.append(Batch(start=b_start, end=b_start + off, files=list(group["path"])))
    log.info("%d files in %d batches of %s", len(files), len(batches), period)
    return batches
