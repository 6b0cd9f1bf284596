"""Generator: real record shapes, seeded, habits, attacks labelled apart, batch files, CLI."""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from secml.dfp import generator as g
from secml.dfp.batcher import time_from_name
from secml.dfp.schema import process_records
from secml.store import event_id


@pytest.fixture(scope="module")
def duo_gen() -> g.Generated:
    """A small Duo data set with every attack type."""
    return g.generate("duo", n_users=12, days=8, seed=3, attack_days=2, n_attacks=10)


@pytest.fixture(scope="module")
def azure_gen() -> g.Generated:
    """A small Azure data set with every attack type."""
    return g.generate("azure", n_users=12, days=8, seed=3, attack_days=2, n_attacks=10)


def test_seeded(duo_gen: g.Generated) -> None:
    """Same seed, same records; another seed, other records."""
    again = g.generate("duo", n_users=12, days=8, seed=3, attack_days=2, n_attacks=10)
    assert again.records == duo_gen.records and again.labels == duo_gen.labels
    other = g.generate("duo", n_users=12, days=8, seed=4, attack_days=2, n_attacks=10)
    assert other.records != duo_gen.records


def test_duo_shape(duo_gen: g.Generated) -> None:
    """Duo Admin API v2 fields: epoch-second timestamp, isotimestamp, lower-case result."""
    rec = duo_gen.records[0]
    for key in ("access_device", "auth_device", "application", "user", "txid", "factor"):
        assert key in rec
    assert isinstance(rec["timestamp"], int)
    assert datetime.fromisoformat(rec["isotimestamp"]).timestamp() == pytest.approx(
        rec["timestamp"], abs=1
    )
    results = Counter(r["result"] for r in duo_gen.records)
    assert set(results) <= {"success", "denied", "fraud"} and results["denied"] > 0


def test_azure_shape(azure_gen: g.Generated) -> None:
    """Azure diagnostic-settings export: time, category, properties{...}."""
    rec = azure_gen.records[0]
    assert rec["category"] == "SignInLogs" and rec["time"].endswith("Z")
    props = rec["properties"]
    for key in ("userPrincipalName", "appDisplayName", "clientAppUsed", "deviceDetail", "status"):
        assert key in props
    assert {"city", "countryOrRegion"} <= set(props["location"])


def test_every_attack_type_labelled_and_present(duo_gen: g.Generated) -> None:
    """Labels name real events (by store.event_id) of every attack type, in the attack days."""
    ids = {event_id(r) for r in duo_gen.records}
    assert {lb["event_id"] for lb in duo_gen.labels} <= ids
    assert {lb["attack_type"] for lb in duo_gen.labels} == set(g.ATTACK_TYPES)
    first_attack_day = datetime(2022, 8, 7, tzinfo=UTC)
    assert all(datetime.fromisoformat(lb["time"]) >= first_attack_day for lb in duo_gen.labels)


def test_attacks_look_like_attacks(duo_gen: g.Generated) -> None:
    """Takeovers come from attacker devices; fatigue bursts are many denials; sprays hit many
    accounts, some of which do not exist."""
    by_id = {event_id(r): r for r in duo_gen.records}
    attacker = {p.country for p in g.ATTACKER_PLACES}
    bursts: Counter[str] = Counter()
    spray: dict[str, set[str]] = {}
    countries = set()
    for lb in duo_gen.labels:
        rec = by_id[lb["event_id"]]
        if lb["attack_type"] == "account_takeover":
            assert rec["access_device"]["browser"] in g.ATTACKER_BROWSERS
            countries.add(rec["access_device"]["location"]["country"])
        if lb["attack_type"] == "mfa_fatigue":
            assert rec["result"] in ("denied", "fraud")
            bursts[lb["attack_id"]] += 1
        if lb["attack_type"] == "password_spray":
            assert rec["result"] == "denied"
            spray.setdefault(lb["attack_id"], set()).add(lb["username"])
    assert bursts and min(bursts.values()) >= 8
    assert countries & attacker  # mostly from abroad, some through a proxy at home
    attack_ids = {lb["event_id"] for lb in duo_gen.labels}
    real = {r["user"]["name"] for r in duo_gen.records if event_id(r) not in attack_ids}
    assert spray and all(len(v) >= 5 for v in spray.values())
    for targets in spray.values():  # real accounts and guessed names nobody has
        assert targets & real and targets - real


def test_users_have_habits_and_some_little_history(duo_gen: g.Generated) -> None:
    """Users differ in volume; most use few browsers; some have too little history."""
    df = process_records(duo_gen.records, "duo")
    counts = df["username"].value_counts()
    assert counts.max() > 5 * counts.min()
    browsers = df.groupby("username")["accessdevicebrowser"].nunique()
    assert (browsers <= 4).mean() > 0.8
    big = g.generate("duo", n_users=40, days=31, seed=1, n_attacks=0)
    per_user = Counter(r["user"]["name"] for r in big.records)
    assert sum(1 for n in per_user.values() if n < 300) >= 3
    assert sum(1 for n in per_user.values() if n >= 300) >= 20
    assert any("/" in u for u in per_user)


def test_write_batches_and_labels(tmp_path: Path, azure_gen: g.Generated) -> None:
    """Files named AZUREAD_<first event time>.json hold JSON arrays; labels are a CSV apart."""
    paths = g.write_batches(azure_gen, tmp_path / "az", file_hours=12)
    assert len(paths) >= 8
    total = 0
    for p in paths:
        assert p.name.startswith("AZUREAD_") and p.name.endswith("Z.json")
        recs = json.loads(p.read_text())
        total += len(recs)
        first = datetime.strptime(recs[0]["time"][:23], "%Y-%m-%dT%H:%M:%S.%f")
        assert time_from_name(p.name) == first.replace(tzinfo=UTC)
    assert total == len(azure_gen.records)
    label_file = g.write_labels(azure_gen, tmp_path)
    rows = list(csv.DictReader(label_file.open()))
    assert len(rows) == len(azure_gen.labels) and set(rows[0]) == set(g.LABEL_COLUMNS)
    assert g.batch_file_name("duo", datetime(2022, 8, 1, 0, 5, 6, 806000, tzinfo=UTC)) == (
        "DUO_2022-08-01T00_05_06.806Z.json"
    )


def test_cli_writes_training_and_inference_folders(tmp_path: Path) -> None:
    """The CLI splits days into training and inference data, labels only in the attack days."""
    rc = g.main(
        [
            "--out",
            str(tmp_path),
            "--source",
            "duo",
            "--users",
            "6",
            "--days",
            "4",
            "--attack-days",
            "1",
            "--attacks",
            "5",
        ]
    )
    assert rc == 0
    train = sorted((tmp_path / "duo-training-data").glob("DUO_*.json"))
    infer = sorted((tmp_path / "duo-inference-data").glob("DUO_*.json"))
    assert train and infer
    infer_ids = {event_id(r) for p in infer for r in json.loads(p.read_text())}
    labels = list(csv.DictReader((tmp_path / "labels_duo.csv").open()))
    assert labels and {lb["event_id"] for lb in labels} <= infer_ids


def test_bad_arguments() -> None:
    """Unknown source and empty sizes are refused."""
    with pytest.raises(ValueError, match="unknown source"):
        g.generate("okta")
    with pytest.raises(ValueError, match="n_users"):
        g.generate("duo", n_users=0)
