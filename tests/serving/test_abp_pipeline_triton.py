"""The ABP batch pipeline's ``--triton`` mode against the real, synced Triton model."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.serving.conftest import jsonl, renamed


@pytest.mark.integration
def test_pipeline_on_triton_matches_in_process(synced, abp_records, abp_production, tmp_path):
    from secml.abp.model import predict as abp_predict
    from training.abp_pipeline import main

    everything = abp_records[0]
    records = everything[:: max(1, len(everything) // 300)][:300]  # spread over GPUs and workloads
    records = renamed(records, uuid.uuid4().hex[:8])  # GPUs new to the served model's history
    src = tmp_path / "in.jsonlines"
    src.write_text(jsonl(records))
    out = tmp_path / "out.jsonlines"
    assert main(["--input", str(src), "--output", str(out), "--triton", "--no-progress"]) == 0
    rows = [json.loads(line) for line in Path(out).read_text().splitlines()]
    mining, scores = abp_predict(abp_production["booster"], records)
    assert len(rows) == len(records)
    assert [r["mining"] for r in rows] == [int(m) for m in mining]
    assert [r["mining_score"] for r in rows] == pytest.approx([float(s) for s in scores], abs=1e-6)
    assert any(r["mining"] for r in rows) and not all(r["mining"] for r in rows)
