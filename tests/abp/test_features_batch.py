"""The column-wise featurizer agrees with reading each record alone; bulk timestamps agree with
pandas; JSON lines decode with a reason for each bad line."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from secml.abp.features import (
    ALIASES,
    FEATURES,
    FeatureError,
    decode,
    epoch_seconds,
    extract,
    iso_utc,
    parse_record,
)

G = "nvidia_smi_log.gpu."
KEYS = list(FEATURES) + [a for names in ALIASES.values() for a in names]
VALUES = st.one_of(
    st.sampled_from(["N/A", "12 W", "3 MiB", "7 %", "45 C", "1530 MHz", "", "abc W", "inf W"]),
    st.sampled_from([None, True, False, 0, 1, 2.5, {"a": 1}, [1]]),
)
RECORDS = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6),
    st.just(["not", "an", "object"]),
)


def _alone(rec: object, i: int) -> np.ndarray | str:
    """parse_record of one record, or its error text."""
    try:
        return parse_record(rec, i)
    except FeatureError as exc:
        return str(exc)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(RECORDS, st.builds(dict)), max_size=12))
def test_batch_equals_one_record_at_a_time(recs: list) -> None:
    got = extract(recs, start_index=5)
    texts = {e.index: str(e) for e in got.errors}
    assert [e.index for e in got.errors] == sorted(texts)
    for i, rec in enumerate(recs):
        alone = _alone(rec, 5 + i)
        if isinstance(alone, str):
            assert not got.ok[i] and texts[5 + i] == alone
            assert np.isnan(got.X[i]).all()
        else:
            assert got.ok[i]
            np.testing.assert_array_equal(got.X[i], alone)


def test_fleet_batch_equals_per_record(fleet) -> None:
    recs = fleet.records[:700]
    got = extract(recs)
    assert not got.errors and got.ok.all()
    for i in (0, 13, 699):
        np.testing.assert_array_equal(got.X[i], parse_record(recs[i]))


def test_bool_does_not_hide_behind_one() -> None:
    recs = [{G + "utilization.gpu_util": 1}, {G + "utilization.gpu_util": True}]
    got = extract(recs)
    assert got.ok.tolist() == [True, False]
    assert "boolean" in str(got.errors[0]) and got.errors[0].index == 1


def test_max_errors_bounds_the_list_not_the_mask() -> None:
    recs = [{"x": 1}] * 10
    got = extract(recs, max_errors=3)
    assert len(got.errors) == 3 and not got.ok.any()


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)))
def test_bulk_nvsmi_timestamps_match_pandas(t: datetime) -> None:
    text = t.replace(microsecond=0).strftime("%a %b %d %H:%M:%S %Y")
    want = pd.Timestamp(text).tz_localize("UTC")
    (epoch,) = epoch_seconds([text])
    assert epoch == want.timestamp()
    assert iso_utc(np.array([epoch])) == [want.isoformat()]


def test_timestamps_iso_and_unreadable() -> None:
    base = datetime(2026, 11, 2, 10, tzinfo=UTC)
    got = epoch_seconds(
        ["2026-11-02T10:00:00", "2026-11-02T11:00:00+01:00", "Mon Feb 31 10:00:00 2026", 5, "x"]
    )
    assert got[:2].tolist() == [base.timestamp()] * 2
    assert all(math.isnan(v) for v in got[2:])
    half = (base + timedelta(microseconds=500_000)).timestamp()
    assert iso_utc(np.array([half, np.nan])) == ["2026-11-02T10:00:00.500000+00:00", None]


def test_decode_names_what_is_wrong() -> None:
    out = decode([b'{"a": 1}', b"  ", b"[1]", b'{"a": '])
    assert out[0] == {"a": 1} and out[1] is None
    assert "expected a JSON object, got list" in str(out[2])
    assert str(out[3]).startswith("invalid JSON")
