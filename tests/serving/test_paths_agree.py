"""Every path scores the same records identically. ABP: the batch CLI (in-process and on
Triton), the CLI as a stream (one record per block), and the gateway (one batch, and one
record per request); all featurize with ``secml.abp.features`` and score the same booster.
DFP: the batch CLI, the CLI streaming, and the gateway (one batch, one login per request); all
featurize with ``secml.dfp.schema`` + ``secml.dfp.history`` and score with
``AutoEncoder.score_tensors`` and the generic model's risk model."""

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


def _dfp_cli(args: list[str], out: Path) -> dict[str, dict]:
    """Run the DFP batch CLI (inference only, every event written); rows by Duo txid."""
    from training.dfp_cli import main

    base = ["--source", "duo", "--train_users", "none", "--infer", "--all_events"]
    assert main([*base, *args, "--output_file", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    return {r["txid"]: r for r in rows}


@pytest.mark.integration
def test_dfp_cli_stream_and_gateway_give_identical_scores(
    synced: Settings, gateway_server: Settings, dfp_production, tmp_path
):
    """DFP: the batch CLI (payload), the CLI streaming over two daily files (states carried
    through the store), the gateway in one batch and the gateway one login per request all
    score every login alike; each path starts from the same (empty) stored history."""
    from secml.store import DetectionStore

    from .conftest import DFP_OTHER_USERS, DFP_USER, duo_records

    records = duo_records(n_per_user=12, seed=31)  # alice (own model) and two generic users
    users = [DFP_USER, *DFP_OTHER_USERS]
    store = DetectionStore(gateway_server.store_url or "")
    days = sorted({r["isotimestamp"][:10] for r in records})
    src = tmp_path / "duo" / "DUO_all.json"
    src.parent.mkdir()
    src.write_text(jsonl(records))
    daily = tmp_path / "daily"
    daily.mkdir()
    for day in days:
        part = [r for r in records if r["isotimestamp"].startswith(day)]
        (daily / f"DUO_{day}T00_00_00Z.json").write_text(jsonl(part))

    store.delete_user_states("duo", users)
    cli = _dfp_cli(["--input_file", str(src)], tmp_path / "cli.jsonl")
    store.delete_user_states("duo", users)
    stream = _dfp_cli(
        ["--input_file", str(daily / "DUO_*.json"), "--data_type", "streaming"],
        tmp_path / "stream.jsonl",
    )
    url = f"{gateway_server.gateway_url}/predict"
    with httpx.Client(timeout=120, headers=api_headers(gateway_server)) as c:
        store.delete_user_states("duo", users)
        r = c.post(url, json={"detector": "dfp", "source": "duo", "records": records})
        assert r.status_code == 200, r.text
        gateway = {rec["txid"]: x for rec, x in zip(records, r.json()["results"], strict=True)}
        store.delete_user_states("duo", users)
        alone = {}
        for rec in sorted(records, key=lambda r: r["timestamp"]):
            r = c.post(url, json={"detector": "dfp", "source": "duo", "records": [rec]})
            assert r.status_code == 200, r.text
            alone[rec["txid"]] = r.json()["results"][0]
    store.delete_user_states("duo", users)

    assert set(cli) == set(stream) == set(gateway) == set(alone) == {r["txid"] for r in records}
    own = dfp_production["own"].model_version
    assert {x["model_version"] for x in gateway.values()} == {
        own,
        dfp_production["generic"].model_version,
    }
    for txid, g in gateway.items():
        # the gateway answers the risk (the generic model carries a risk model)
        assert g["details"]["score_kind"] == "risk"
        assert g["model_version"] == cli[txid]["model_version"] == alone[txid]["model_version"]
        # one batch of the same logins: the same forward, to the bit
        assert g["score"] == cli[txid]["risk"]
        assert g["details"]["mean_abs_z"] == cli[txid]["mean_abs_z"]
        assert g["anomaly"] == cli[txid]["anomaly"]
        # daily batches and single logins run the float32 autoencoder on other row counts
        for other in (stream[txid]["risk"], alone[txid]["score"]):
            assert other == pytest.approx(g["score"], rel=1e-5, abs=1e-6)
        assert alone[txid]["details"]["history"] == g["details"]["history"]
    assert any(x["anomaly"] for x in gateway.values()) or min(
        x["score"] for x in gateway.values()
    ) < max(x["score"] for x in gateway.values())
