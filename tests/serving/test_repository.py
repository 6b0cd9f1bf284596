"""Served numbers equal the in-process model's: hypothesis-generated inputs, real Triton."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secml.abp.features import FEATURES
from secml.abp.serve import AbpScorer
from secml.dfp.serve import DfpScorer
from secml.repository import ABP_MODEL, DFP_MODEL, NotSyncedError, read_index, version_dirs
from serving.triton import TritonClient, fp32

from .conftest import DFP_USER, duo_records

UNITS = {
    "fb_memory_usage": "MiB",
    "utilization": "%",
    "temperature": "C",
    "power_readings": "W",
    "clocks": "MHz",
    "applications_clocks": "MHz",
    "default_applications_clocks": "MHz",
    "max_clocks": "MHz",
}
HYPO = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _infer(s: Any, model: str, records: list[dict], source: str = "duo") -> list[dict]:
    """Score DFP ``records`` (no stored history) on the session's Triton straight through its
    gRPC API, featurized as the gateway does."""
    from serving.detectors import DETECTORS, DictRecords

    spec = DETECTORS[("dfp", source)]
    batch = DictRecords(records)
    prepared = spec.prepare(batch)
    assert not prepared.errors, prepared.errors
    inputs, _ = spec.featurize(prepared, {})

    async def go() -> dict:
        client = TritonClient(s.triton_grpc_url, timeout_s=60)
        try:
            return await client.infer(model, inputs, prepared.outputs)
        finally:
            await client.aclose()

    return spec.answer(batch, asyncio.run(go()), prepared)


def _infer_abp(s: Any, x: np.ndarray) -> dict[str, np.ndarray]:
    """Score an (n, 18) feature matrix on the session's Triton (typed tensors)."""

    async def go() -> dict:
        client = TritonClient(s.triton_grpc_url, timeout_s=60)
        try:
            return await client.infer(
                ABP_MODEL, [fp32("FEATURES", x)], ["SCORE", "THRESHOLD", "VERSION"]
            )
        finally:
            await client.aclose()

    return asyncio.run(go())


def _unit(field: str) -> str:
    """The unit nvidia-smi prints for a feature field."""
    return UNITS[field.removeprefix("nvidia_smi_log.gpu.").split(".")[0]]


@st.composite
def nvsmi_batches(draw: st.DrawFn, base: list[dict]) -> list[dict]:
    """Real records with some feature values replaced by other numbers or N/A."""
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(n):
        rec = dict(base[draw(st.integers(0, len(base) - 1))])
        for field in draw(st.lists(st.sampled_from(FEATURES), max_size=6, unique=True)):
            if draw(st.booleans()):
                value = draw(st.floats(0, 20000, allow_nan=False, width=32))
                rec[field] = f"{value:.2f} {_unit(field)}"
            else:
                rec[field] = "N/A"
        out.append(rec)
    return out


@pytest.mark.integration
def test_abp_parity_with_in_process_xgboost(synced, abp_records, abp_production):
    from secml.abp.features import to_matrix
    from secml.abp.model import score

    base = abp_records[0][::25]

    @HYPO
    @given(batch=nvsmi_batches(base))
    def check(batch: list[dict]) -> None:
        x = to_matrix(batch)
        served = _infer_abp(synced, x)
        expected = score(abp_production["booster"], x)
        assert served["SCORE"].dtype == np.float32 and served["SCORE"].shape == (len(batch), 1)
        np.testing.assert_allclose(served["SCORE"].reshape(-1), expected, rtol=0, atol=1e-6)
        assert set(served["VERSION"].reshape(-1).tolist()) == {int(abp_production["version"])}
        assert set(served["THRESHOLD"].reshape(-1).tolist()) == {0.5}

    check()


@st.composite
def duo_batches(draw: st.DrawFn, base: list[dict]) -> list[dict]:
    """Real Duo records, some moved to other browsers, places or results."""
    idx = draw(st.lists(st.integers(0, len(base) - 1), min_size=1, max_size=10, unique=True))
    out = []
    for i in sorted(idx):
        rec = json.loads(json.dumps(base[i]))
        if draw(st.booleans()):
            rec["access_device"]["browser"] = draw(st.sampled_from(["Chrome", "Safari", "Opera"]))
        if draw(st.booleans()):
            rec["result"] = draw(st.sampled_from(["success", "denied", "fraud"]))
        if draw(st.booleans()):
            rec["access_device"]["location"] = {"city": draw(st.text("abcxyz", min_size=1))}
        out.append(rec)
    return out


def _assert_close(got: object, want: object, path: str = "") -> None:
    """Equal structures; floats within 1e-5 relative (1e-7 absolute): one float32 forward per
    model group rounds a loss apart from a per-user forward by ~1e-7, and a z-score, |loss -
    mean| / std, magnifies that by the cancellation (1.1e-6 relative seen on a z of 2.07)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for k in want:
            _assert_close(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7, nan_ok=True), path
    else:
        assert got == want, path


@pytest.mark.integration
def test_dfp_parity_with_in_process_scoring(synced, dfp_production):
    from secml.dfp.registry import ModelRegistry
    from secml.dfp.schema import process_records
    from secml.dfp.serve import dfp_results, score_dfp_events

    registry = ModelRegistry("duo", settings=synced, ttl_s=0.0)  # straight from MLflow
    base = duo_records(n_per_user=6, seed=21)

    @HYPO
    @given(batch=duo_batches(base))
    def check(batch: list[dict]) -> None:
        served = _infer(synced, DFP_MODEL, batch, "duo")
        scored = score_dfp_events(process_records(batch, "duo"), "duo", registry)
        expected = dfp_results(scored, "duo", synced.dfp_z_threshold, len(batch))
        for s, e in zip(served, expected, strict=True):
            # the same answers: every key, string and flag alike; floats to float32 rounding
            # (1e-6 relative): Triton runs one forward per model group, whose float32
            # reconstructions (the "expected" values) round apart from a per-user forward in
            # the last bits, and numpy 1.26 (Triton's environment) and numpy 2 round reductions
            # (mean |z|, ae_surprisal) apart too
            _assert_close({k: s[k] for k in e}, dict(e))

    check()
    index = read_index(synced.triton_model_repository / DFP_MODEL)
    assert index[dfp_production["own"].model_name] == dfp_production["own"].version


def test_unsynced_models_say_not_synced(tmp_repo):
    """Version 1 of each detector model has no weights: it answers NOT_SYNCED, naming the model."""
    abp = AbpScorer(tmp_repo / ABP_MODEL / "1")
    with pytest.raises(NotSyncedError, match="NOT_SYNCED: abp-nvsmi-xgb"):
        abp.outputs(np.zeros((1, 18), dtype=np.float32))
    dfp = DfpScorer(tmp_repo / DFP_MODEL)
    with pytest.raises(NotSyncedError, match="NOT_SYNCED: DFP duo"):
        dfp.score_records(duo_records(n_per_user=1, users=(DFP_USER,)), "duo")
    assert version_dirs(tmp_repo / ABP_MODEL) == [1]
