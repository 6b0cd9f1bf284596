"""End-to-end tests of the batch pipeline CLI (``python -m training.abp_pipeline``)."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from secml.abp import model as m
from secml.abp.features import ALIASES, FEATURES, to_matrix
from secml.settings import ROOT, get_settings
from training import abp_pipeline as pipe


def _labels(fleet) -> np.ndarray:
    truth = m.read_labels(str(fleet.labels))
    return np.array([truth[m.record_key(r)][0] for r in fleet.records])


def test_cli_jsonlines_end_to_end_in_a_subprocess(fleet, tmp_path: Path) -> None:
    out = tmp_path / "out" / "scored.jsonlines"
    proc = subprocess.run(
        [sys.executable, "-m", "training.abp_pipeline", "--input", str(fleet.data),
         "--output", str(out), "--model", str(fleet.model_path), "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == len(fleet.records)
    for src, got in zip(fleet.records[::101], rows[::101], strict=True):
        assert {k: got[k] for k in src} == src  # input columns untouched
        assert got["mining"] in (0, 1) and 0 <= got["mining_score"] <= 1
    flags = np.array([r["mining"] for r in rows])
    # the same per-GPU history (temporal windows, allocation latch) as the pipeline: file order
    uuids = [r.get("nvidia_smi_log.gpu.uuid") for r in fleet.records]
    expected = (m.score(fleet.booster, to_matrix(fleet.records), uuids) >= 0.5).astype(int)
    assert np.array_equal(flags, expected)
    assert (flags == _labels(fleet)).mean() > 0.95
    assert f"rows={len(rows)}" in proc.stderr and f"flagged={flags.sum()}" in proc.stderr
    assert "rows/s=" in proc.stderr


def test_csv_in_csv_out_with_globs(fleet, tmp_path: Path) -> None:
    # Newer drivers print power under other keys (features.ALIASES): a mixed-driver CSV has
    # all of them as columns, empty where a record's layout lacks the key.
    aliases = [a for names in ALIASES.values() for a in names]
    cols = ["nvidia_smi_log.timestamp", "nvidia_smi_log.gpu.uuid", *FEATURES, *aliases]
    for i, part in enumerate((fleet.records[:40], fleet.records[40:100])):
        with (tmp_path / f"part{i}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore", restval="")
            w.writeheader()
            w.writerows(part)
    out = tmp_path / "scored.csv"
    code = pipe.main(["--input", str(tmp_path / "part*.csv"), "--output", str(out),
                      "--model", str(fleet.model_path), "--no-progress"])  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 100 and list(rows[0]) == [*cols, "mining", "mining_score"]
    uuids = [r.get("nvidia_smi_log.gpu.uuid") for r in fleet.records[:100]]
    expected = m.score(fleet.booster, to_matrix(fleet.records[:100]), uuids)
    np.testing.assert_allclose([float(r["mining_score"]) for r in rows], expected, atol=1e-6)


def _bad_input(fleet, path: Path) -> None:
    good = [json.dumps(r) for r in fleet.records[:5]]
    bad_unit = json.dumps(fleet.records[0] | {FEATURES[0]: "12 W"})
    path.write_text("\n".join([good[0], "{not json", good[1], "[1, 2]", bad_unit, *good[2:]]))


def test_bad_rows_are_skipped_and_reported_by_line(
    fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src, out = tmp_path / "in.jsonlines", tmp_path / "out.jsonlines"
    _bad_input(fleet, src)
    summary = pipe.run([str(src)], str(out), pipe.local_scorer(str(fleet.model_path))[0],
                       progress=False)  # fmt: skip
    assert (summary.rows, summary.scored, summary.skipped) == (8, 5, 3)
    assert len(out.read_text().splitlines()) == 5
    assert "in.jsonlines:2: invalid JSON (" in summary.errors[0]
    assert summary.errors[0].endswith("key at column 2)")
    assert ":4: expected a JSON object, got list" in summary.errors[1]
    assert ":5: " in summary.errors[2] and "'12 W': unit 'W', expected 'MiB'" in summary.errors[2]
    assert sum("skipped bad row" in r.message for r in caplog.records) == 3


def test_bad_row_is_fatal_with_on_error_fail(
    fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "in.jsonlines"
    _bad_input(fleet, src)
    args = ["--input", str(src), "--output", str(tmp_path / "o.jsonlines"),
            "--model", str(fleet.model_path), "--on-error", "fail", "--no-progress"]  # fmt: skip
    code = pipe.main(args)
    assert code == 2
    assert any("in.jsonlines:2: invalid JSON" in r.message for r in caplog.records)


def test_missing_input_and_model_give_clear_errors(
    fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = str(tmp_path / "o.jsonlines")
    assert pipe.main(["--input", str(tmp_path / "nope*.jsonlines"), "--output", out,
                      "--model", str(fleet.model_path), "--no-progress"]) == 2  # fmt: skip
    assert any("no file matches" in r.message for r in caplog.records)
    assert pipe.main(["--input", str(tmp_path / "missing.jsonlines"), "--output", out,
                      "--model", str(fleet.model_path), "--no-progress"]) == 2  # fmt: skip
    assert pipe.main(["--input", str(fleet.data), "--output", out,
                      "--model", str(tmp_path / "no-model.ubj"), "--no-progress"]) == 2  # fmt: skip
    assert any("model file" in r.message and "does not exist" in r.message
               for r in caplog.records)  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_triton_mode_without_triton_says_so(
    fleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SECML_TRITON_URL", f"127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("SECML_TRITON_TIMEOUT_S", "2")
    get_settings.cache_clear()
    try:
        code = pipe.main(["--input", str(fleet.data), "--output", str(tmp_path / "o.jsonlines"),
                          "--triton", "--no-progress"])  # fmt: skip
    finally:
        get_settings.cache_clear()
    assert code == 2
    assert any("Triton at" in r.message and "unreachable" in r.message for r in caplog.records)


def test_without_a_threshold_the_scorers_own_decides(fleet, tmp_path) -> None:
    """``--triton`` passes no threshold: the one the served model reports is used."""
    src, out = tmp_path / "in.jsonlines", tmp_path / "out.jsonlines"
    src.write_text("".join(json.dumps(r) + "\n" for r in fleet.records[:200]))

    class Served:
        threshold: float | None = None

        def __call__(self, X, _lines, _uuids):
            self.threshold = 0.8  # learnt from the first answer, as TritonScorer does
            return np.linspace(0, 1, len(X)).astype(np.float32)

    pipe.run([str(src)], str(out), Served(), threshold=None, progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["mining"] for r in rows] == [int(r["mining_score"] >= 0.8) for r in rows]
    assert 0 < sum(r["mining"] for r in rows) < len(rows)
