"""Every ABP path scores the same records identically: the batch CLI (in-process and on
Triton), the CLI as a stream (one record per block), and the gateway (one batch, and one
record per request). All featurize with ``secml.abp.features`` and score the same booster."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from secml.abp.features import to_matrix
from secml.abp.model import save_booster, score
from secml.settings import Settings

from .conftest import api_headers, jsonl, renamed


def _cli(args: list[str]) -> list[float]:
    """Run the batch CLI; its mining_score column."""
    from training.abp_pipeline import main

    out = Path(args[args.index("--output") + 1])
    assert main([*args, "--no-progress"]) == 0
    return [json.loads(line)["mining_score"] for line in out.read_text().splitlines()]


@pytest.mark.integration
def test_cli_stream_and_gateway_give_identical_scores(
    synced: Settings, gateway_server: Settings, abp_records, abp_production, tmp_path
):
    everything = abp_records[0]
    records = everything[:: max(1, len(everything) // 120)][:120]  # many GPUs and workloads
    src = tmp_path / "in.jsonlines"
    src.write_text(jsonl(records))
    booster_file = tmp_path / "model.ubj"
    booster_file.write_bytes(save_booster(abp_production["booster"]))
    base = ["--input", str(src), "--threshold", "0.5"]
    tag = uuid.uuid4().hex[:8]
    src_t = tmp_path / "in-triton.jsonlines"
    src_t.write_text(jsonl(renamed(records, f"t{tag}")))

    cli = _cli([*base, "--output", str(tmp_path / "a.jsonlines"), "--model", str(booster_file)])
    stream = _cli(
        [*base, "--output", str(tmp_path / "b.jsonlines"), "--model", str(booster_file),
         "--batch-size", "1"]
    )  # fmt: skip
    cli_triton = _cli(["--input", str(src_t), "--threshold", "0.5",
                       "--output", str(tmp_path / "c.jsonlines"), "--triton"])  # fmt: skip

    url = f"{gateway_server.gateway_url}/predict"
    with httpx.Client(timeout=60, headers=api_headers(gateway_server)) as c:
        gw = renamed(records, f"g{tag}")
        batch = c.post(url, json={"detector": "abp", "source": "nvsmi", "records": gw})
        assert batch.status_code == 200, batch.text
        gateway = [x["score"] for x in batch.json()["results"]]
        one_by_one = []
        for rec in renamed(records[:30], f"o{tag}"):
            r = c.post(url, json={"detector": "abp", "source": "nvsmi", "records": [rec]})
            assert r.status_code == 200, r.text
            one_by_one.append(r.json()["results"][0]["score"])

    uuids = [r.get("nvidia_smi_log.gpu.uuid") for r in records]
    expected = score(abp_production["booster"], to_matrix(records), uuids)
    # the gateway answers the model's float32 exactly; the CLI writes scores rounded to 6 places
    assert gateway == expected.tolist()
    assert one_by_one == gateway[:30]
    rounded = [round(x, 6) for x in expected.tolist()]
    assert cli == rounded and stream == rounded and cli_triton == rounded
    assert min(rounded) < 0.5 < max(rounded)  # mining and benign samples both scored
    assert np.isfinite(expected).all()
