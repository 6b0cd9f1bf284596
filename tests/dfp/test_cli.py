"""The Morpheus-like batch CLI: arguments, control messages, progress, summary, output."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from secml.dfp import generator as g
from secml.dfp.postprocess import SCORE_COLUMNS, feature_columns
from training import dfp_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny generated Duo data: training and inference folders plus labels."""
    out = tmp_path_factory.mktemp("dfp-cli")
    args = ["--out", str(out), "--source", "duo", "--users", "5", "--days", "4"]
    assert g.main([*args, "--attack-days", "1", "--attacks", "5", "--file-hours", "12"]) == 0
    return out


def _args(*argv: str) -> Any:
    """Parsed CLI arguments."""
    return dfp_cli.build_parser().parse_args(list(argv))


def test_control_message_becomes_jobs() -> None:
    """Each input of a control message is a job with its tasks and batching options."""
    msg = str(ROOT / "control_messages" / "duo-load-train-infer-payload.json")
    jobs = dfp_cli.jobs_from_args(_args("--input_file", msg))
    assert [j.tasks for j in jobs] == [["training"], ["inference"]]
    assert all(j.source == "duo" and j.data_type == "payload" for j in jobs)
    assert jobs[0].start_time == pd.Timestamp("2022-08-01", tz="UTC")
    over = dfp_cli.jobs_from_args(
        _args(
            "--input_file",
            msg,
            "--start_time",
            "2022-08-10",
            "--duration",
            "2d",
            "--train_users",
            "none",
        )
    )
    assert over[0].tasks == [] and over[1].tasks == ["inference"]
    assert over[0].end_time == pd.Timestamp("2022-08-12", tz="UTC")


def test_data_files_need_a_source(data_dir: Path) -> None:
    """Plain data globs need --source; --infer adds scoring."""
    glob = str(data_dir / "duo-training-data" / "DUO_*.json")
    with pytest.raises(SystemExit, match="--source"):
        dfp_cli.jobs_from_args(_args("--input_file", glob))
    (job,) = dfp_cli.jobs_from_args(_args("--input_file", glob, "--source", "duo", "--infer"))
    assert job.tasks == ["training", "inference"] and job.files == [glob]


def test_bad_duration_and_bad_message(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A bad duration stops argument parsing; a bad control message names the field."""
    with pytest.raises(SystemExit):
        _args("--input_file", "x", "--duration", "soon")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "inputs": [
                    {
                        "tasks": [{"type": "trian", "properties": {}}],
                        "metadata": {"data_type": "payload", "source": "duo"},
                    }
                ]
            }
        )
    )
    with caplog.at_level(logging.ERROR):
        assert dfp_cli.main(["--input_file", str(bad)]) == 1
    assert "inputs[0].tasks[0]" in caplog.text


class _FakeModels:
    """Stand-ins for train_user / score_events that record their calls."""

    def __init__(self) -> None:
        self.trained: list[tuple[str, int]] = []

    def train_user(self, df: pd.DataFrame, source: str, user: str, **_: Any) -> Any:
        """Pretend to train; remember who and on how many rows."""
        self.trained.append((user, len(df)))
        return SimpleNamespace(
            model_version=f"dfp-{source}-x:1", promoted=True, rows=len(df), val_loss=0.1
        )

    def score_events(self, df: pd.DataFrame, source: str, **_: Any) -> pd.DataFrame:
        """Score by logcount so a few events pass the threshold."""
        out = df.copy()
        for col in feature_columns(source):
            out[col] = "p" if col.endswith("_pred") else 1.0
        out["mean_abs_z"] = out["logcount"].to_numpy(dtype=float) / 5.0
        out["max_abs_z"] = out["mean_abs_z"] * 2
        out["model_version"] = f"dfp-{source}-generic:1"
        return out


def test_payload_run_trains_scores_and_writes(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Training data -> generic + per-user models; inference -> detections with DESIGN columns."""
    fake = _FakeModels()
    monkeypatch.setattr("secml.dfp.train.train_user", fake.train_user)
    monkeypatch.setattr("secml.dfp.infer.score_events", fake.score_events)
    monkeypatch.setattr("training.dfp_cli.mlflow_ready", lambda _s: True)  # models are faked
    out = tmp_path / "det.csv"
    with caplog.at_level(logging.INFO, logger="dfp_cli"):
        rc = dfp_cli.main(
            [
                "--source",
                "duo",
                "--train_users",
                "all",
                "--min_user_events",
                "20",
                "--input_file",
                str(data_dir / "duo-training-data" / "DUO_*.json"),
                "--input_file",
                str(data_dir / "duo-inference-data" / "DUO_*.json"),
                "--infer",
                "--output_file",
                str(out),
                "--cache_dir",
                str(tmp_path / "cache"),
            ]
        )
    assert rc == 0
    users = [u for u, _ in fake.trained]
    assert users[0] == "generic" and len(users) > 1
    det = pd.read_csv(out)
    assert len(det) > 0 and (det["mean_abs_z"] > 2.0).all()
    assert list(det.columns[-4:]) == list(SCORE_COLUMNS)
    assert "summary: models trained" in caplog.text and "[batch 1/" in caplog.text


def test_streaming_waits_for_history(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streaming batches train only once a user's window reaches min_history."""
    fake = _FakeModels()
    monkeypatch.setattr("secml.dfp.train.train_user", fake.train_user)
    monkeypatch.setattr("training.dfp_cli.mlflow_ready", lambda _s: True)  # models are faked
    rc = dfp_cli.main(
        [
            "--source",
            "duo",
            "--train_users",
            "generic",
            "--data_type",
            "streaming",
            "--min_history",
            "150",
            "--min_increment",
            "100000",
            "--input_file",
            str(data_dir / "duo-training-data" / "DUO_*.json"),
            "--cache_dir",
            str(tmp_path / "cache"),
        ]
    )
    assert rc == 0
    assert len(fake.trained) == 1 and fake.trained[0][1] >= 150
    assert (tmp_path / "cache" / "duo" / "dfp-duo-generic.jsonl").exists()


@pytest.mark.integration
def test_cli_trains_on_mlflow_then_scores(
    mlflow_server: Any, data_dir: Path, tmp_path: Path
) -> None:
    """Real MLflow: train the generic model, then score new data with it."""
    train_glob = str(data_dir / "duo-training-data" / "DUO_*.json")
    assert (
        dfp_cli.main(
            [
                "--source",
                "duo",
                "--train_users",
                "generic",
                "--epochs",
                "3",
                "--input_file",
                train_glob,
            ]
        )
        == 0
    )
    out = tmp_path / "det.jsonl"
    assert (
        dfp_cli.main(
            [
                "--source",
                "duo",
                "--train_users",
                "none",
                "--infer",
                "--all_events",
                "--input_file",
                str(data_dir / "duo-inference-data" / "DUO_*.json"),
                "--output_file",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(r["model_version"].startswith("dfp-duo-generic:") for r in rows)
    assert all(np.isfinite(r["mean_abs_z"]) for r in rows)


@pytest.mark.integration
def test_missing_model_is_a_clear_error(
    mlflow_server: Any,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No production model: exit status 1 and the registry's message, no traceback (MLflow is
    up: without it the CLI stops earlier: test_mlflow_down_fails_at_once_naming_the_server)."""
    from secml.dfp.registry import NoModelError

    def _no_model(*_: Any, **__: Any) -> pd.DataFrame:
        raise NoModelError("no production model for user 'x' and no 'dfp-duo-generic'")

    monkeypatch.setattr("secml.dfp.infer.score_events", _no_model)
    with caplog.at_level(logging.INFO, logger="dfp_cli"):
        rc = dfp_cli.main(
            [
                "--source",
                "duo",
                "--train_users",
                "none",
                "--infer",
                "--input_file",
                str(data_dir / "duo-inference-data" / "DUO_*.json"),
            ]
        )
    assert rc == 1
    assert "no production model" in caplog.text and "Traceback" not in caplog.text
    assert "summary: error" in caplog.text


def test_mlflow_down_fails_at_once_naming_the_server(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No MLflow: one clear error before any work, not minutes of client retries."""
    import socket

    from secml.settings import get_settings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("SECML_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.ERROR):
            rc = dfp_cli.main(["--source", "duo", "--train_users", "generic", "--input_file",
                               str(data_dir / "duo-training-data" / "DUO_*.json")])  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert rc == 1
    assert f"MLflow at http://127.0.0.1:{port} is unreachable" in caplog.text
