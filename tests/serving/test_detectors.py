"""Gateway record handling: cheap event ids equal the store's, bounded stored copies, typed
ABP inputs from the one featurizer, answers from typed outputs."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secml.abp.features import FEATURES, to_matrix
from secml.store import event_id as store_event_id
from serving.detectors import (
    ABP_KEEP,
    DictRecords,
    abp_event_ids,
    answer_abp,
    bounded_record,
    event_id,
    prepare_abp,
)

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(max_size=6), JSON, max_size=6))
def test_event_id_equals_the_stores(record: dict) -> None:
    assert event_id(record) == store_event_id(record)


def test_event_id_small_floats_and_unicode() -> None:
    for rec in ({"a": 1e-05}, {"a": -3.2e-7, "b": "ü\n\x00"}, {"z": 1e16, "a": [0.1, None]}):
        assert event_id(rec) == store_event_id(rec)


def test_bounded_record_keeps_what_the_model_reads(abp_records) -> None:
    rec = abp_records[0][0]
    size = len(orjson.dumps(rec))
    assert bounded_record(rec, size, ABP_KEEP) == rec
    small = bounded_record(rec, 1024, ABP_KEEP)
    assert small["_truncated"]["bytes"] == size and len(small) < len(rec)
    del small["_truncated"]
    np.testing.assert_array_equal(to_matrix([small]), to_matrix([rec]))  # same features


def test_prepare_abp_sends_the_featurizers_matrix(abp_records) -> None:
    recs = abp_records[0][:5]
    p = prepare_abp(recs)
    assert not p.errors
    x = p.inputs[0]
    assert (x.name, x.datatype, x.shape) == ("FEATURES", "FP32", [5, len(FEATURES)])
    np.testing.assert_array_equal(x.array, to_matrix(recs))
    assert p.inputs[1].array[0, 0] == recs[0]["nvidia_smi_log.gpu.uuid"].encode()
    bad = [dict(r) for r in recs]
    bad[2][FEATURES[0]] = "lots MiB"
    (err,) = prepare_abp(bad).errors
    assert (err.index, err.field) == (2, FEATURES[0])


def test_answer_abp_reads_typed_outputs(abp_records) -> None:
    recs = abp_records[0][:3]
    out = {
        "SCORE": np.array([[0.9], [0.2], [0.5]], dtype=np.float32),
        "THRESHOLD": np.full((3, 1), 0.5, dtype=np.float32),
        "VERSION": np.full((3, 1), 4, dtype=np.int64),
    }
    res = answer_abp(recs, out)
    assert [r["anomaly"] for r in res] == [True, False, True]
    assert res[0]["model_version"] == "abp-nvsmi-xgb:4"
    assert res[0]["user"] == recs[0]["nvidia_smi_log.gpu.uuid"]
    assert res[0]["event_time"].endswith("+00:00")


def test_abp_event_ids_key_on_gpu_and_time(abp_records) -> None:
    a, b = abp_records[0][:2]
    again = dict(a) | {FEATURES[0]: "1 MiB"}  # the same sample, sent again with other values
    ids = abp_event_ids([a, b, again, {"x": "1"}])
    assert ids[0] != ids[1] and ids[0] == ids[2]
    assert ids[3] == store_event_id({"x": "1"})  # no uuid/timestamp: the canonical id


KEYS = list(FEATURES) + ["nvidia_smi_log.gpu.gpu_power_readings.instant_power_draw", "other"]
VALUES = st.one_of(
    st.sampled_from(["N/A", "12 W", "3 MiB", "7 %", "45 C", "1530 MHz", "", "abc W"]),
    st.sampled_from([None, True, False, 0, 1, 2.5, -1e300]),
)


def _errors(p) -> list[tuple[int, str, str]]:
    return [(e.index, e.field, e.message) for e in p.errors]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6), max_size=8))
def test_msgspec_columns_read_as_the_dicts_do(records: list[dict]) -> None:
    """The fast decoder's columns featurize exactly like the records decoded in full."""
    from serving.decode import abp_body

    raw = orjson.dumps({"detector": "abp", "source": "nvsmi", "records": records})
    cols = abp_body(raw)[2]
    fast, full = prepare_abp(cols), prepare_abp(DictRecords(records))
    assert _errors(fast) == _errors(full)
    if not full.errors:
        np.testing.assert_array_equal(fast.inputs[0].array, full.inputs[0].array)
        assert fast.inputs[1].array.tolist() == full.inputs[1].array.tolist()
    assert abp_event_ids(cols) == abp_event_ids(records)
    assert [cols.record(i) for i in range(len(cols))] == records


def test_msgspec_path_refuses_what_it_cannot_read() -> None:
    from serving.decode import Undecodable, abp_body

    for records in ([{FEATURES[0]: {"a": 1}}], [["x"]], [1]):
        raw = orjson.dumps({"detector": "abp", "source": "nvsmi", "records": records})
        with pytest.raises(Undecodable):
            abp_body(raw)
    with pytest.raises(Undecodable):
        abp_body(b"[1, 2]")
    assert abp_body(b'{"detector": "dfp", "source": "duo", "records": [{}]}')[2] is None


def test_bounded_record_takes_any_json() -> None:
    big = {"nvidia_smi_log.gpu.uuid": "GPU-1", "n": 2**70, "pad": "x" * 600}
    assert bounded_record(big, 4096) == big
    cut = bounded_record(big, 300, ("nvidia_smi_log.gpu.uuid",))
    assert cut["nvidia_smi_log.gpu.uuid"] == "GPU-1" and "n" not in cut
