"""Batcher: file time from the name else mtime, periods, start/end window, sampling."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from secml.dfp.batcher import BatchError, batch_files, file_time, sample_files, time_from_name

NAMES = [
    "DUO_2022-08-01T00_05_06.806Z.json",
    "DUO_2022-08-01T13_00_00.000Z.json",
    "DUO_2022-08-02T00_00_00.000Z.json",
    "DUO_2022-08-02T23_59_59.999Z.json",
    "DUO_2022-08-04T08_00_00.000Z.json",
]


def test_time_from_name() -> None:
    """Morpheus-style names and plain ISO names are parsed; others give None."""
    assert time_from_name("s3://b/DUO_2022-08-01T00_05_06.806Z.json") == pd.Timestamp(
        "2022-08-01T00:05:06.806", tz="UTC"
    )
    assert time_from_name("AZUREAD_2022-08-01T00_03_56.207Z.json") == pd.Timestamp(
        "2022-08-01T00:03:56.207", tz="UTC"
    )
    assert time_from_name("x_2022-08-01T10:11:12Z.json") == pd.Timestamp(
        "2022-08-01T10:11:12", tz="UTC"
    )
    assert time_from_name("logs.json") is None


def test_mtime_when_name_has_no_time(tmp_path: Path) -> None:
    """Without a time in the name, the file's modification time is used."""
    f = tmp_path / "logs.json"
    f.write_text("[]")
    os.utime(f, (1659312000, 1659312000))  # 2022-08-01T00:00:00Z
    assert file_time(str(f)) == pd.Timestamp("2022-08-01", tz="UTC")


def test_batches_by_day() -> None:
    """Daily batches hold the files of each UTC day; empty days give no batch."""
    batches = batch_files(NAMES, period="D")
    assert [b.start.day for b in batches] == [1, 2, 4]
    assert [len(b.files) for b in batches] == [2, 2, 1]
    assert batches[0].end - batches[0].start == pd.Timedelta("1D")
    assert [len(b.files) for b in batch_files(NAMES, period="12h")] == [1, 1, 1, 1, 1]
    weekly = batch_files(NAMES, period="W")
    assert sum(len(b.files) for b in weekly) == 5


def test_window_start_inclusive_end_exclusive() -> None:
    """start_time keeps files at or after it; end_time drops files at or after it."""
    batches = batch_files(NAMES, start_time="2022-08-01T13:00:00Z", end_time="2022-08-04T08:00:00Z")
    files = [f for b in batches for f in b.files]
    assert files == NAMES[1:4]
    naive = batch_files(NAMES, start_time="2022-08-02")
    assert [f for b in naive for f in b.files] == NAMES[2:]
    assert batch_files(NAMES, start_time="2023-01-01") == []


def test_sampling() -> None:
    """Fraction, count (seeded) and one file per interval."""
    files = pd.DataFrame({"path": NAMES, "time": [time_from_name(n) for n in NAMES]})
    assert len(sample_files(files, 0.4, seed=1)) == 2
    assert len(sample_files(files, 1.0)) == 5
    assert list(sample_files(files, 3, seed=1)["path"]) == list(
        sample_files(files, 3, seed=1)["path"]
    )
    assert len(sample_files(files, 3)) == 3
    assert len(sample_files(files, "1D")) == 3
    assert len(batch_files(NAMES, sampling=2)[0].files) <= 2


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"period": "fortnight"}, "period"),
        ({"start_time": "not a time"}, "start_time"),
        ({"start_time": "2022-08-03", "end_time": "2022-08-02"}, "end_time"),
        ({"sampling": 0}, "sampling"),
        ({"sampling": 2.5}, "sampling"),
        ({"sampling": True}, "sampling"),
    ],
)
def test_bad_options_named(kwargs: dict, option: str) -> None:
    """Each bad option is refused with its name."""
    with pytest.raises(BatchError, match=option):
        batch_files(NAMES, **kwargs)
