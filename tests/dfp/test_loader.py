"""Loader: globs through fsspec, the JSON layouts real exports use, errors naming file:line."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest

from secml.dfp.loader import LoaderError, expand_paths, load_records, storage_options
from secml.dfp.schema import process
from secml.settings import Settings


def _write(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_globs_and_layouts(tmp_path: Path, duo_records: list[dict]) -> None:
    """Array, JSON lines, Duo API response and Event Hub wrappers all load, in file order."""
    a, b, c, d = duo_records[:10], duo_records[10:20], duo_records[20:30], duo_records[30:40]
    _write(tmp_path / "DUO_2022-08-01T00_00_00.000Z.json", json.dumps(a))
    _write(tmp_path / "DUO_2022-08-02T00_00_00.000Z.json", "\n".join(map(json.dumps, b)) + "\n\n")
    _write(
        tmp_path / "DUO_2022-08-03T00_00_00.000Z.json",
        json.dumps({"response": {"authlogs": c, "metadata": {}}, "stat": "OK"}),
    )
    _write(tmp_path / "DUO_2022-08-04T00_00_00.000Z.json", json.dumps({"records": d}))
    _write(tmp_path / "other.txt", "not a log")
    raw = load_records(str(tmp_path / "DUO_*.json"), "duo")
    assert len(raw) == 40
    assert list(raw["_raw"]) == a + b + c + d
    assert raw["_file"].str.endswith(".json").all()
    assert list(raw.loc[raw["_file"].str.contains("08-02"), "_index"]) == list(range(10))
    assert len(process(raw, "duo")) == 40


def test_several_patterns_deduplicated(tmp_path: Path, duo_records: list[dict]) -> None:
    """Overlapping patterns read each file once."""
    f = _write(tmp_path / "DUO_x.json", json.dumps(duo_records[:3]))
    urls = expand_paths([str(f), str(tmp_path / "*.json")])
    assert urls == [str(f)]


def test_memory_filesystem(duo_records: list[dict]) -> None:
    """Any fsspec URL works (memory:// stands in for s3:// here)."""
    fs = fsspec.filesystem("memory")
    fs.pipe("/dfp/DUO_2022-08-01T00_00_00.000Z.json", json.dumps(duo_records[:5]).encode())
    raw = load_records("memory://dfp/DUO_*.json", "duo")
    assert len(raw) == 5 and raw["_file"].iloc[0].startswith("memory://")


def test_s3_options_from_settings() -> None:
    """s3:// gets the endpoint and credentials from settings; local paths get none."""
    s = Settings(
        s3_endpoint_url="http://127.0.0.1:9999", aws_access_key_id="k", aws_secret_access_key="s"
    )
    opts = storage_options("s3://bucket/DUO_*.json", s)
    assert opts == {
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9999"},
        "key": "k",
        "secret": "s",
    }
    assert storage_options("/data/DUO_*.json", s) == {}


def test_errors_name_file_and_line(tmp_path: Path, duo_records: list[dict]) -> None:
    """No match, bad JSON (with line number) and non-object records are named."""
    with pytest.raises(LoaderError, match="no files match"):
        load_records(str(tmp_path / "nothing*.json"), "duo")
    lines = [json.dumps(r) for r in duo_records[:3]]
    lines.insert(2, "{broken")
    bad = _write(tmp_path / "DUO_bad.json", "\n".join(lines))
    with pytest.raises(LoaderError, match=r"DUO_bad.json line 3: invalid JSON"):
        load_records(str(bad), "duo")
    arr = _write(tmp_path / "DUO_arr.json", '[{"a": 1},\n {"b": 2,]')
    with pytest.raises(LoaderError, match=r"DUO_arr.json line 2"):
        load_records(str(arr), "duo")
    scalars = _write(tmp_path / "DUO_scalar.json", json.dumps([duo_records[0], 7]))
    with pytest.raises(LoaderError, match=r"DUO_scalar.json record 1: expected a JSON object"):
        load_records(str(scalars), "duo")
    binary = tmp_path / "DUO_bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LoaderError, match="not UTF-8"):
        load_records(str(binary), "duo")


def test_empty_file_gives_no_rows(tmp_path: Path) -> None:
    """An empty batch file is not an error."""
    _write(tmp_path / "DUO_empty.json", "")
    assert load_records(str(tmp_path / "DUO_empty.json"), "duo").empty
