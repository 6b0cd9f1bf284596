"""Schema: features, derived counts, time handling and errors that name file/record/field."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from secml.dfp.history import HISTORY_BINARY, HISTORY_NUMERIC
from secml.dfp.schema import (
    COUNT_FEATURES,
    FEATURES,
    MISSING,
    SchemaError,
    frame_from_records,
    process,
    process_records,
)
from secml.store import event_id


def test_feature_spec_matches_contract() -> None:
    """The model engineer builds on these exact lists."""
    duo, azure = FEATURES["duo"], FEATURES["azure"]
    assert duo.categorical == ["accessdevicebrowser", "accessdeviceos", "authdevicename", "reason"]
    # Morpheus's columns stay a subset, so its configuration still works
    assert duo.binary[0] == "result" and duo.numeric[:2] == ["logcount", "locincrement"]
    assert azure.numeric[:3] == ["appincrement", "locincrement", "logcount"]
    assert "statusfailureReason" in azure.categorical
    for spec in (duo, azure):
        assert set(HISTORY_NUMERIC) <= set(spec.numeric)
        assert set(HISTORY_BINARY) <= set(spec.binary)
        assert "history_depth" not in spec.all  # grows without bound: not a model input


@pytest.mark.parametrize("source", ["duo", "azure"])
def test_process_columns_and_types(source: str, request: pytest.FixtureRequest) -> None:
    """Every feature, username, tz-aware UTC timestamp, event_id and raw record are present."""
    df = request.getfixturevalue(f"small_{source}_frame")
    spec = FEATURES[source]
    for col in ["username", "timestamp", "event_id", "_raw", *spec.all]:
        assert col in df.columns, col
    assert str(df["timestamp"].dt.tz) == "UTC"
    assert df["timestamp"].is_monotonic_increasing
    assert df["event_id"].is_unique
    assert [event_id(r) for r in df["_raw"]] == list(df["event_id"])
    for col in spec.numeric:
        if col in COUNT_FEATURES:
            assert df[col].dtype == "int64" and (df[col] >= 1).all()
        else:
            assert df[col].dtype == "float64" and (df[col] >= 0).all()
    assert not df[spec.categorical].isna().any().any()


def test_duo_epoch_seconds_and_lowercase_result(duo_records: list[dict]) -> None:
    """Real Duo: ``timestamp`` epoch seconds, ``result`` lower case; ``success`` is True."""
    rec = duo_records[0]
    df = process_records([rec], "duo")
    assert df["timestamp"].iloc[0] == pd.Timestamp(rec["timestamp"], unit="s", tz="UTC")
    assert bool(df["result"].iloc[0]) == (rec["result"] == "success")
    denied = dict(rec, result="denied")
    fraud = dict(rec, result="FRAUD")
    out = process_records([denied, fraud], "duo")
    assert not out["result"].any()


def test_duo_falls_back_to_isotimestamp(duo_records: list[dict]) -> None:
    """Without ``timestamp`` the ISO ``isotimestamp`` is used."""
    rec = dict(duo_records[0])
    del rec["timestamp"]
    df = process_records([rec], "duo")
    assert df["timestamp"].iloc[0] == pd.Timestamp(rec["isotimestamp"]).tz_convert("UTC")


def _duo(i: int, day: int, city: str, base: dict) -> dict:
    """A copy of ``base`` at 08:00+i minutes on ``day`` in ``city``."""
    rec = copy.deepcopy(base)
    when = datetime(2022, 8, 1 + day, 8, i, tzinfo=UTC)
    rec["timestamp"] = int(when.timestamp())
    rec["isotimestamp"] = when.isoformat()
    rec["access_device"]["location"]["city"] = city
    rec["txid"] = f"tx-{day}-{i}"
    return rec


def test_derived_counts_per_user_and_day(duo_records: list[dict]) -> None:
    """logcount and locincrement run per user and UTC day, in time order (input unordered)."""
    base = duo_records[0]
    recs = [_duo(0, 0, "A", base), _duo(1, 0, "B", base), _duo(2, 0, "A", base)]
    recs += [_duo(0, 1, "A", base), _duo(5, 1, "C", base)]
    df = process_records(list(reversed(recs)), "duo")
    assert list(df["logcount"]) == [1, 2, 3, 1, 2]
    assert list(df["locincrement"]) == [1, 2, 2, 1, 2]
    other = copy.deepcopy(base)
    other["user"]["name"] = "someone.else@example.com"
    both = process_records([*recs, _duo(3, 0, "Z", other)], "duo")
    assert both.loc[both["username"] == "someone.else@example.com", "logcount"].tolist() == [1]


def test_azure_appincrement(azure_records: list[dict]) -> None:
    """appincrement counts distinct apps per user and day."""
    base = azure_records[0]
    recs = []
    for i, app in enumerate(["A", "B", "A", "C"]):
        r = copy.deepcopy(base)
        r["time"] = (datetime(2022, 8, 1, 9, i, tzinfo=UTC)).isoformat().replace("+00:00", "Z")
        r["properties"]["appDisplayName"] = app
        recs.append(r)
    df = process_records(recs, "azure")
    assert list(df["appincrement"]) == [1, 2, 2, 3]
    assert list(df["appDisplayName"]) == ["A", "B", "A", "C"]


def test_missing_optional_field_becomes_unknown(azure_records: list[dict]) -> None:
    """An absent optional field is a category of its own, not an error."""
    rec = copy.deepcopy(azure_records[0])
    del rec["properties"]["deviceDetail"]
    df = process_records([rec], "azure")
    assert df["deviceDetailbrowser"].iloc[0] == MISSING


def _error(records: list, source: str) -> str:
    """The SchemaError message for ``records``."""
    with pytest.raises(SchemaError) as info:
        process(frame_from_records(records, file="DUO_x.json"), source)
    return str(info.value)


def test_errors_name_file_record_and_field(duo_records: list[dict], azure_records: list) -> None:
    """Malformed records are refused with file, record index and field."""
    good = duo_records[0]
    no_user = copy.deepcopy(good)
    del no_user["user"]["name"]
    msg = _error([good, no_user], "duo")
    assert "DUO_x.json record 1" in msg and "user.name" in msg
    bad_result = dict(good, result="maybe")
    assert "'result'" in _error([bad_result], "duo")
    millis = dict(good, timestamp=good["timestamp"] * 1000)
    assert "milliseconds" in _error([millis], "duo")
    bad_iso = copy.deepcopy(azure_records[0])
    bad_iso["time"] = "yesterday"
    msg = _error([azure_records[1], bad_iso], "azure")
    assert "record 1" in msg and "'time'" in msg
    assert "expected a JSON object" in _error([good, 5], "duo")
    not_obj = copy.deepcopy(good)
    not_obj["access_device"] = "laptop"
    assert "access_device" in _error([not_obj], "duo")
    with pytest.raises(SchemaError, match="unknown DFP source"):
        process_records([good], "okta")


def test_naive_times_are_utc(azure_records: list[dict]) -> None:
    """An Azure time without zone is read as UTC, one with an offset converted to UTC."""
    a, b = copy.deepcopy(azure_records[0]), copy.deepcopy(azure_records[1])
    a["time"] = "2022-08-01T10:00:00"
    b["time"] = "2022-08-01T12:00:00+02:00"
    df = process_records([a, b], "azure")
    assert (df["timestamp"] == pd.Timestamp("2022-08-01T10:00:00", tz="UTC")).all()


def test_process_is_deterministic_and_keeps_raw(duo_records: list[dict]) -> None:
    """Same input, same output; the raw records are kept untouched for the writer."""
    a = process_records(duo_records, "duo")
    b = process_records(list(reversed(duo_records)), "duo")
    cols = ["username", "timestamp", "logcount", "locincrement", "event_id"]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert sorted(map(event_id, duo_records)) == sorted(a["event_id"])
    assert all(isinstance(r, dict) for r in a["_raw"])
    assert process_records([], "duo").empty


def test_unused_field_does_not_change_features(duo_records: list[dict]) -> None:
    """Changing a field the schema ignores (txid, ip) leaves every feature as it was."""
    spec = FEATURES["duo"]
    changed = copy.deepcopy(duo_records)
    for r in changed:
        r["txid"] = "other"
        r["access_device"]["ip"] = "10.0.0.1"
    a = process_records(duo_records, "duo")[spec.all]
    b = process_records(changed, "duo")[spec.all]
    pd.testing.assert_frame_equal(a, b)


def test_timestamps_span(small_duo_frame: pd.DataFrame) -> None:
    """The fixture spans several days (the derived counts reset each day)."""
    span = small_duo_frame["timestamp"].max() - small_duo_frame["timestamp"].min()
    assert span > timedelta(days=2)
    assert small_duo_frame["logcount"].max() <= 10


def test_same_features_in_the_triton_environment(duo_records: list[dict]) -> None:
    """The schema runs under numpy 1.26 / pandas 2.2 (.venv-triton) with identical output."""
    import json
    import subprocess

    from secml.settings import get_settings

    py = get_settings().triton_venv / "bin" / "python"
    if not py.exists():
        pytest.skip(f"no Triton model environment at {py}")
    code = (
        "import json,sys; from secml.dfp.schema import process_records, FEATURES;"
        "df=process_records(json.load(sys.stdin),'duo');"
        "print(df[['event_id',*FEATURES['duo'].all]].to_json(orient='records'))"
    )
    res = subprocess.run(
        [str(py), "-c", code],
        input=json.dumps(duo_records),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    there = pd.DataFrame(json.loads(res.stdout))
    here = process_records(duo_records, "duo")[["event_id", *FEATURES["duo"].all]]
    assert list(there["event_id"]) == list(here["event_id"])
    assert there["logcount"].tolist() == here["logcount"].tolist()
    assert there["result"].tolist() == here["result"].tolist()
    assert there["authdevicename"].tolist() == here["authdevicename"].tolist()


def test_loader_keeps_raw_records(tmp_path, duo_records: list[dict]) -> None:
    """``loader.load_records`` keeps every raw record as ``_raw`` for ``schema``."""
    import json

    from secml.dfp.loader import load_records

    (tmp_path / "DUO_2022-08-01T00_00_00.000Z.json").write_text(json.dumps(duo_records[:4]))
    raw = load_records(str(tmp_path / "DUO_*.json"), "duo")
    assert list(raw["_raw"]) == duo_records[:4]
