"""Demo traffic through the real gateway produces stored detections."""

from __future__ import annotations

import json

import pytest

from secml.store import DetectionStore
from serving.traffic import read_jsonl, send


def test_read_jsonl_names_the_bad_line(tmp_path):
    f = tmp_path / "x.jsonlines"
    f.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(ValueError, match=r"x.jsonlines:3"):
        read_jsonl(f)
    f.write_text('{"a": 1}\n[1]\n')
    with pytest.raises(ValueError, match=r"x.jsonlines:2: expected a JSON object"):
        read_jsonl(f)
    f.write_text(json.dumps({"a": 1}) + "\n")
    assert read_jsonl(f) == [{"a": 1}]


@pytest.mark.integration
def test_traffic_produces_detections(synced, gateway_server, abp_records):
    store = DetectionStore(gateway_server.store_url)
    before = store.count("abp")
    summary = send("abp", "nvsmi", abp_records[0][:300], batch=100, settings=gateway_server)
    assert summary.records == 300
    assert summary.anomalies > 0, "the generated fleet holds miners"
    assert summary.stored == summary.anomalies
    assert store.count("abp") == before + summary.anomalies
    assert all(m.startswith("abp-nvsmi-xgb:") for m in summary.models)
