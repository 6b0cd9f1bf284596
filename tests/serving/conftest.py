"""Serving fixtures: tiny ABP and DFP models trained with the project's own code, registered in
the session's real MLflow, promoted to ``production`` and synced into the session's Triton."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from secml.repository import copy_foundation
from secml.settings import Settings

API_KEY_HEADER = "X-API-Key"
DFP_USER = "alice@example.com"  # has a model of her own
DFP_OTHER_USERS = ("bob.smith@example.com", "carol/ops@example.com")  # scored by generic
T0 = datetime(2022, 8, 1, 8, 0, tzinfo=UTC)


def api_headers(settings: Settings) -> dict[str, str]:
    """Headers with the session's gateway API key."""
    return {API_KEY_HEADER: settings.gateway_api_key.get_secret_value()}


# ---------------------------------------------------------------------------------- ABP
@pytest.fixture(scope="session")
def abp_records(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], dict]:
    """Seeded nvidia-smi records and their ground-truth labels (8 GPUs x 20 min)."""
    from secml.abp.generator import generate
    from secml.abp.model import read_jsonlines, read_labels

    out = tmp_path_factory.mktemp("abp-data")
    data, labels = generate(out, gpus=8, hours=1 / 3, seed=7, interval_s=10)
    return read_jsonlines(str(data)), read_labels(str(labels))


def train_abp_booster(records: list[dict], labels: dict, seed: int, n_estimators: int = 15) -> Any:
    """A small booster from the ABP engineer's own training function."""
    from secml.abp import model as m

    ds, _ = m.build_dataset(records, labels)
    return m.train(ds, m.TrainParams(n_estimators=n_estimators, max_depth=4, seed=seed))


def register_abp(booster: Any, settings: Settings, promote: bool = True) -> str:
    """Log the booster as a new ``abp-nvsmi-xgb`` version (mlflow.xgboost, ubj) and promote it."""
    import mlflow
    from mlflow import MlflowClient

    from secml.abp import MODEL_NAME, PROD_ALIAS

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment("serving-tests-abp")
    with mlflow.start_run():
        info = mlflow.xgboost.log_model(
            booster, name="model", model_format="ubj", registered_model_name=MODEL_NAME
        )
    version = str(info.registered_model_version)
    if promote:
        MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(
            MODEL_NAME, PROD_ALIAS, version
        )
    return version


@pytest.fixture(scope="session")
def abp_production(mlflow_server: Settings, abp_records: tuple[list, dict]) -> dict[str, Any]:
    """A registered, promoted ABP model: {"version", "booster"}."""
    records, labels = abp_records
    booster = train_abp_booster(records, labels, seed=1)
    return {"version": register_abp(booster, mlflow_server), "booster": booster}


# ---------------------------------------------------------------------------------- DFP
def duo_records(n_per_user: int = 40, seed: int = 0, users: tuple[str, ...] = ()) -> list[dict]:
    """Raw Duo records of the serving tests' users (the DFP tests' builder)."""
    from tests.dfp.conftest import small_duo_records

    return small_duo_records(n_per_user, seed, users or (DFP_USER, *DFP_OTHER_USERS))


TINY_AE = {"encoder_layers": [32, 16], "decoder_layers": [32], "max_epochs": 4, "batch_size": 64}


@pytest.fixture(scope="session")
def dfp_production(mlflow_server: Settings) -> dict[str, Any]:
    """Promoted ``dfp-duo-<alice>`` and ``dfp-duo-generic`` models trained by secml.dfp.train."""
    from secml.dfp.schema import process_records
    from secml.dfp.train import train_user

    events = process_records(duo_records(), "duo")
    mine = events[events["username"] == DFP_USER]
    own = train_user(mine, "duo", DFP_USER, params=TINY_AE, settings=mlflow_server)
    generic = train_user(events, "duo", "generic", params=TINY_AE, settings=mlflow_server)
    assert own.promoted and generic.promoted
    return {"own": own, "generic": generic}


@pytest.fixture(scope="session")
def synced(triton_server: Settings, abp_production: dict, dfp_production: dict) -> Settings:
    """Both detectors synced into the session's Triton repository and served."""
    from serving.sync import sync_all

    results = sync_all(triton_server)
    assert all(r.message and "failed" not in r.message for r in results), results
    _warm_dfp(triton_server)
    return triton_server


def _warm_dfp(s: Settings) -> None:
    """One DFP request straight to Triton with a long timeout: the first one loads torch models
    (seconds on a busy 2-core machine), which is not what the gateway tests measure."""
    import asyncio

    from serving.detectors import DETECTORS, DictRecords
    from serving.triton import TritonClient

    spec = DETECTORS[("dfp", "duo")]
    prepared = spec.prepare(DictRecords(duo_records(n_per_user=1)))
    inputs, _ = spec.featurize(prepared, {})

    async def go() -> None:
        client = TritonClient(s.triton_grpc_url or "", timeout_s=300)
        try:
            await client.infer("dfp", inputs, prepared.outputs)
        finally:
            await client.aclose()

    asyncio.run(go())


def renamed(records: list[dict], tag: str) -> list[dict]:
    """The records with their GPUs renamed: new to the served model's per-GPU history.

    The served ABP booster reads each GPU's history (the allocation latch), kept for the life
    of the Triton model; a test that compares Triton with a fresh in-process run gives Triton
    GPUs of its own, so both start from no history.
    """
    key = "nvidia_smi_log.gpu.uuid"
    return [{**r, key: f"{r[key]}-{tag}"} if key in r else r for r in records]


def jsonl(records: list[dict]) -> str:
    """Records as JSON lines (debug output)."""
    return "\n".join(json.dumps(r) for r in records)


@pytest.fixture
def tmp_repo(tmp_path: Path) -> Path:
    """An empty Triton repository with the committed model code copied in."""
    from secml.settings import ROOT

    dst = tmp_path / "triton_models"
    copy_foundation(ROOT / "triton_models", dst)
    return dst
