"""The independent DFP scenario set: loadable, labelled, complete and deterministic."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from secml.dfp.loader import load_records
from secml.dfp.scenarios import ATTACK_TYPES, BENIGN_KINDS, LABEL_COLUMNS, PREFIX, generate, main
from secml.dfp.schema import process

SMALL = {"users": 12, "days": 6, "score_days": 2}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scenarios")
    return out, generate(out, seed=0, **SMALL)


@pytest.mark.parametrize("source", ["duo", "azure"])
def test_files_load_and_labels_point_at_inference_events(data: tuple[Path, dict], source: str):
    out, _ = data
    glob = f"{PREFIX[source]}_*.json"
    train = process(load_records(str(out / f"{source}-training-data" / glob), source), source)
    infer = process(load_records(str(out / f"{source}-inference-data" / glob), source), source)
    assert len(train) > 500 and len(infer) > 100
    assert train["timestamp"].max() < infer["timestamp"].min()
    labels = _rows(out / f"labels_{source}.csv")
    with (out / f"labels_{source}.csv").open(encoding="utf-8") as fh:
        assert fh.readline().strip() == ",".join(LABEL_COLUMNS)
    ids = set(infer["event_id"])
    assert labels and {r["event_id"] for r in labels} <= ids
    assert not {r["event_id"] for r in labels} & set(train["event_id"])
    assert {r["attack_type"] for r in labels} == set(ATTACK_TYPES)
    assert {r["source"] for r in labels} == {source}
    spray = [r for r in labels if r["attack_type"] == "password_spray"]
    ghosts = {r["username"] for r in spray} - set(train["username"])
    assert ghosts, "a spray tries accounts that never appear in training"
    benign = _rows(out / f"benign_{source}.csv")
    assert benign and {r["kind"] for r in benign} <= set(BENIGN_KINDS)
    assert {r["event_id"] for r in benign} <= ids
    assert not {r["event_id"] for r in benign} & {r["event_id"] for r in labels}


def test_same_seed_same_output_other_seed_differs(data: tuple[Path, dict], tmp_path: Path):
    out, summary = data
    again = generate(tmp_path / "same", seed=0, **SMALL)
    assert again == summary
    assert _tree(tmp_path / "same") == _tree(out)
    generate(tmp_path / "other", seed=1, **SMALL)
    assert _tree(tmp_path / "other") != _tree(out)


def test_cli_writes_one_source(tmp_path: Path):
    assert main(["--out", str(tmp_path), "--source", "duo", "--users", "8", "--days", "3"]) == 0
    assert (tmp_path / "duo-training-data").is_dir() and (tmp_path / "labels_duo.csv").exists()
    assert not (tmp_path / "azure-inference-data").exists()
