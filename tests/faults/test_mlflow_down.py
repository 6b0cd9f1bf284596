"""Fault: the MLflow server stops while ``abp-train`` is training.

The session's real MLflow is stopped (SIGTERM) the moment the flow's ``abp-fit`` task finishes,
so the flow reaches ``abp-register`` with no server. The flow must say why it waits (the URL
and the step), keep trying for a bounded time, and finish once MLflow is back: the version is
registered and the gate ran. With MLflow gone for good it must fail with an error naming the
URL and what to do, after the configured tries, not after MLflow client's four minutes.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secml.settings import Settings, get_settings

pytestmark = pytest.mark.integration

SMALL = {"n_estimators": 20, "max_depth": 3, "seed": 0, "use_store_labels": False}


class _Records(logging.Handler):
    """Keeps the records of one logger; calls ``on_record`` for each."""

    def __init__(self, on_record: Any = None) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.on_record = on_record

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


def _retries(monkeypatch: pytest.MonkeyPatch, attempts: int, delay_s: float) -> Settings:
    """Session settings with MLflow retries of this test's own (undone by monkeypatch)."""
    monkeypatch.setenv("SECML_MLFLOW_RETRY_ATTEMPTS", str(attempts))
    monkeypatch.setenv("SECML_MLFLOW_RETRY_DELAY_S", str(delay_s))
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    """Settings read again after the test (its environment is undone by then)."""
    yield
    get_settings.cache_clear()


@pytest.fixture
def nvsmi(tmp_path: Path) -> Path:
    """A small generated nvidia-smi data set of this test's own (no cached steps hit)."""
    from secml.abp.generator import generate

    data, _ = generate(tmp_path, gpus=12, hours=0.5, seed=int(time.time()) % 1000, interval_s=20)
    return data


@pytest.fixture
def servers(mlflow_server: Settings, prefect_server: Settings, _stack: Any) -> Any:
    """The session's stack, with MLflow and Prefect up (the tests stop and start MLflow)."""
    return _stack


def _listen(name: str, handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
    return logger


def test_mlflow_stopped_during_training_flow_waits_and_finishes(
    monkeypatch: pytest.MonkeyPatch, servers: Any, nvsmi: Path
) -> None:
    """Up to 40 tries 3 s apart: long enough for MLflow to restart on a busy machine."""
    from mlflow import MlflowClient

    from training.abp_flow import abp_train

    retries = _retries(monkeypatch, 40, 3.0)
    uri = retries.mlflow_tracking_uri
    stopped = threading.Event()

    def stop_after_fit(record: logging.LogRecord) -> None:
        name = str(getattr(record, "task_run_name", ""))
        if name.startswith("abp-fit") and "Finished in state" in record.getMessage():
            servers.down(["mlflow"], timeout_s=15)  # in the flow's thread: before register
            stopped.set()

    tasks = _Records(stop_after_fit)
    waits = _Records()
    loggers = [_listen("prefect.task_runs", tasks), _listen("training.mlflow_retry", waits)]
    model_name = f"abp-faults-{uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {}

    def train() -> None:
        try:
            out["result"] = abp_train(
                data=[str(nvsmi)], model_name=model_name, use_tuned=False, **SMALL
            )
        except BaseException as exc:  # noqa: BLE001  (asserted below)
            out["error"] = exc

    thread = threading.Thread(target=train, name="abp-train", daemon=True)
    try:
        thread.start()
        assert stopped.wait(600), "abp-fit never finished"
        deadline = time.monotonic() + 60
        while not waits.messages(logging.WARNING) and time.monotonic() < deadline:
            time.sleep(0.2)
        warned = waits.messages(logging.WARNING)
        assert warned, "the flow did not say it waits for MLflow"
        assert uri in warned[0] and "unreachable" in warned[0]
        assert f"registering {model_name}" in warned[0] and "try 2/40" in warned[0]
    finally:
        if stopped.is_set():
            servers.up(["mlflow"])
        thread.join(timeout=600)
        for logger, h in zip(loggers, (tasks, waits), strict=True):
            logger.removeHandler(h)
    assert "error" not in out, out.get("error")
    result = out["result"]
    assert any("answers again" in m and uri in m for m in waits.messages(logging.INFO))
    client = MlflowClient(uri)
    version = client.get_model_version(model_name, result["version"])
    assert version.run_id == result["run_id"]
    assert result["gate"]["promoted"] in (True, False) and "min_recall" in result["gate"]


def test_mlflow_gone_for_good_fails_naming_the_url(
    monkeypatch: pytest.MonkeyPatch, servers: Any, nvsmi: Path
) -> None:
    """3 tries 2 s apart, then a ConnectionError naming the URL and what to do."""
    from training.abp_flow import abp_train

    retries = _retries(monkeypatch, 3, 2.0)
    uri = retries.mlflow_tracking_uri
    waits = _Records()
    logger = _listen("training.mlflow_retry", waits)
    servers.down(["mlflow"], timeout_s=15)
    try:
        with pytest.raises(ConnectionError) as info:
            abp_train(data=[str(nvsmi)], model_name="abp-faults-never", use_tuned=False, **SMALL)
    finally:
        servers.up(["mlflow"])
        logger.removeHandler(waits)
    msg = str(info.value)
    assert f"MLflow at {uri} is unreachable" in msg and "after 3 tries" in msg
    assert "make up" in msg and "SECML_MLFLOW_TRACKING_URI" in msg
    # bounded by the settings (3 tries 2 s apart), not by MLflow client's minutes of retries:
    # tries 2/3 and 3/3 were announced, and no step ran against the missing server
    warned = waits.messages(logging.WARNING)
    assert len(warned) == 2 and "try 3/3" in warned[1] and "abp-train waits" in warned[0]
