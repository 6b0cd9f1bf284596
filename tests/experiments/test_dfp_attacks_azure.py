"""DFP mimicry and low-and-slow spray on Azure AD sign-in logs (Azure field names)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from secml.dfp.generator import ATTACKER_PLACES
from secml.dfp.schema import process_records
from secml.experiments import dfp_attacks as da
from secml.settings import ROOT

EXAMPLE = ROOT / "examples" / "experiments" / "dfp-azure.yaml"
CODES = {p.code for p in ATTACKER_PLACES}


@pytest.fixture(scope="module")
def azure(tmp_path_factory) -> da.Data:
    return da.dfp_generator(7, tmp_path_factory.mktemp("az"), users=10, days=10, source="azure")


def _history(data: da.Data, user: str) -> list[dict]:
    return [da.fields(r) for r in data.train if da.fields(r)["user"] == user]


def _minute_of_day(t) -> float:
    return t.hour * 60 + t.minute + t.second / 60


def _most(values: list) -> object:
    return max(set(values), key=values.count)


def test_the_generator_gives_azure_records(azure) -> None:
    assert azure.kind == "dfp-azure"
    assert all("properties" in r and "isotimestamp" not in r for r in azure.train + azure.test)
    assert max(map(da._time, azure.train)) < min(map(da._time, azure.test))


def test_mimicry_copies_the_victim_from_another_country(azure) -> None:
    recs, extra = da.Mimicry(3, victims=4, events_per_victim=3).craft(azure)
    assert len(recs) == 12 and extra == {"victims": 4.0}
    for r in recs:
        p = r["properties"]
        assert p["status"]["errorCode"] == 0 and r["resultType"] == "0"  # successful
        mine = _history(azure, p["userPrincipalName"])
        dev = p["deviceDetail"]
        assert dev["browser"] == _most([h["browser"] for h in mine])
        assert dev["operatingSystem"] == _most([h["os"] for h in mine])
        assert dev["displayName"] == _most([h["device"] for h in mine])
        assert p["appDisplayName"] == _most([h["app"] for h in mine])
        assert p["clientAppUsed"] == _most([h["client_app"] for h in mine])
        country = p["location"]["countryOrRegion"]
        assert country in CODES and country not in {h["country"] for h in mine}
        # at one of the victim's own hours (UTC), within the 20 minutes of jitter
        t = _minute_of_day(da._time(r))
        gaps = [abs(t - _minute_of_day(da._time({"time": h["time"]}))) for h in mine]
        assert min(min(g, 1440 - g) for g in gaps) <= 21
    assert len(process_records(recs, "azure")) == len(recs)  # they featurise as Azure events


def test_spray_is_one_failure_per_account_per_day_hours_apart(azure) -> None:
    recs, extra = da.LowAndSlowSpray(3, targets=6, days=2, gap_minutes=30).craft(azure)
    assert len(recs) == 12 and extra == {"targets": 6.0}
    props = [r["properties"] for r in recs]
    assert {p["status"]["errorCode"] for p in props} == {50126}
    assert len({p["location"]["countryOrRegion"] for p in props}) == 1  # one place...
    assert len({p["deviceDetail"]["browser"] for p in props}) == 1  # ...one device
    times = [da._time(r) for r in recs]
    assert all(b - a >= timedelta(minutes=30) for a, b in zip(times, times[1:], strict=False))
    per_day: dict = {}
    for r, t in zip(recs, times, strict=True):
        per_day.setdefault(t.date(), []).append(r["properties"]["userPrincipalName"])
    assert len(per_day) == 2 and all(len(u) == len(set(u)) == 6 for u in per_day.values())


def test_detector_scores_both_attacks_on_azure(azure) -> None:
    det = da.DfpAutoencoder(7, max_epochs=3)
    det.fit(azure)
    benign = det.metrics(azure)["benign_alert_rate"]
    for attack in (da.Mimicry(7), da.LowAndSlowSpray(7)):
        res = attack.run(det, azure)
        m = res.metrics
        assert 0 <= m["recall"] <= 1 and m["attack_events"] > 0
        assert m["benign_alert_rate"] == benign
        assert {e["country"] for e in res.tables["events"]} <= CODES
    # a spray of failures from abroad stands out from the benign days
    assert da.LowAndSlowSpray(7).run(det, azure).metrics["recall"] > benign


def test_unknown_source_is_refused_by_name(tmp_path) -> None:
    with pytest.raises(ValueError, match="source must be one of .*'okta'"):
        da.dfp_generator(1, tmp_path, source="okta")


@pytest.mark.integration
def test_the_azure_example_runs_from_the_cli(tmp_path, prefect_server, capsys) -> None:
    from training import experiment as cli

    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["datasets"][0]["params"] |= {"users": 10, "days": 10}
    doc["detectors"][0]["params"] |= {"max_epochs": 3}
    doc["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "azure.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["run", str(path), "--no-mlflow"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out["attacks"]) == {"mimicry", "spray"}
    for name in ("mimicry", "spray"):
        m = out["attacks"][name]["metrics"]
        assert 0 <= m["recall"] <= 1 and m["attack_events"] > 0
    events = Path(out["output_dir"]) / "tables" / "spray-events.csv"
    assert events.exists() and "failure" in events.read_text()
