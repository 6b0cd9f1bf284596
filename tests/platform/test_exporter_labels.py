"""The exporter's label counts (one grouped SQL query, no pandas) match the detections store.

``training.prefect_exporter.LabelCountsSql`` reads the store's tables directly so the
long-running exporter does not import ``secml.store``; it must count exactly what
``DetectionStore.labelled`` (each detection's latest label) gives, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from secml.store import DetectionStore
from training.prefect_exporter import LabelCountsSql, _label_counts


def _fill(store: DetectionStore) -> None:
    """Detections of two ABP versions and DFP, some relabelled, some never labelled."""
    rows = [
        {"detector": det, "source": src, "record": {"i": i}, "score": 0.9, "model_version": v}
        for i, (det, src, v) in enumerate(
            [("abp", "nvsmi", "abp-nvsmi-xgb:3")] * 5
            + [("abp", "nvsmi", "abp-nvsmi-xgb:4")] * 3
            + [("dfp", "duo", "dfp-duo-generic:1")] * 2
        )
    ]
    ids = store.add_detections(rows)
    for i in ids[:3]:
        store.add_label(i, "true_positive", "ana")
    store.add_label(ids[3], "true_positive", "ana")
    store.add_label(ids[3], "false_positive", "bob", "relabelled")  # latest wins
    store.add_label(ids[5], "false_positive", "ana")
    store.add_label(ids[5], "true_positive", "bob")
    store.add_label(ids[8], "false_positive", "ana")
    # ids[4], ids[6], ids[7], ids[9]: never labelled


def _check(url: str, prefix: str) -> None:
    store = DetectionStore(url, table_prefix=prefix)
    _fill(store)
    sql = LabelCountsSql(url, table_prefix=prefix)
    for detector in ("abp", "dfp"):
        assert sorted(sql.label_counts(detector)) == sorted(_label_counts(store, detector))
    assert sorted(sql.label_counts("abp")) == [
        ("abp-nvsmi-xgb:3", "false_positive", 1),
        ("abp-nvsmi-xgb:3", "true_positive", 3),
        ("abp-nvsmi-xgb:4", "true_positive", 1),
    ]
    assert sql.label_counts("dfp") == [("dfp-duo-generic:1", "false_positive", 1)]
    assert sql.label_counts("other") == []


def test_label_counts_match_the_store_on_sqlite(tmp_path: Path) -> None:
    """Same counts as the store's labelled() frame, latest label of each detection only."""
    _check(f"sqlite:///{tmp_path / 'detections.db'}", "")


@pytest.mark.integration
def test_label_counts_match_the_store_on_postgresql(postgres_url: str) -> None:
    """The same query on the machine's real PostgreSQL."""
    _check(postgres_url, "exporter_")


def test_no_store_url_is_a_clear_error() -> None:
    """An empty store URL names the setting."""
    with pytest.raises(ValueError, match="SECML_STORE_URL"):
        LabelCountsSql("")


def test_exporter_imports_neither_pandas_nor_prefect_nor_mlflow(tmp_path: Path) -> None:
    """The long-running exporter stays light: it only reads REST APIs and SQL, and a SQLite
    store through the standard library (no SQLAlchemy either)."""
    url = f"sqlite:///{tmp_path / 'detections.db'}"
    _fill(DetectionStore(url))
    code = (
        "import sys, training.prefect_exporter as e\n"
        f"print(e.LabelCountsSql({url!r}).label_counts('dfp'))\n"
        "print(sorted(m for m in ('pandas', 'prefect', 'mlflow', 'secml.store', 'sqlalchemy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[('dfp-duo-generic:1', 'false_positive', 1)]", "[]"]
