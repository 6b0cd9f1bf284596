"""The per-user history state: same features alone or in a batch, and what each one sees."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from secml.dfp.geo import centroid, country_code, haversine_km
from secml.dfp.history import HISTORY_FEATURES, UserState, featurize
from secml.dfp.schema import extract, frame_from_records, process_records

T0 = datetime(2023, 3, 6, tzinfo=UTC)


def duo(
    when: datetime,
    *,
    user: str = "ana",
    country: str = "United States",
    browser: str = "Chrome",
    os: str = "Windows",
    phone: str = "iPhone (555-0100)",
    app: str = "VPN",
    result: str = "success",
) -> dict[str, Any]:
    """A minimal Duo authentication-log record."""
    return {
        "timestamp": int(when.timestamp()),
        "result": result,
        "reason": "user_approved" if result == "success" else "no_response",
        "user": {"name": user},
        "application": {"name": app},
        "access_device": {
            "browser": browser,
            "os": os,
            "location": {"city": "X", "state": "Y", "country": country},
        },
        "auth_device": {"name": phone},
    }


def habit(days: int = 20, user: str = "ana") -> list[dict[str, Any]]:
    """Weekday logins at 14:00 and 16:00 UTC (about 09-11 on the US solar clock)."""
    out = []
    for d in range(days):
        day = T0 + timedelta(days=d)
        out += [
            duo(day + timedelta(hours=14), user=user),
            duo(day + timedelta(hours=16), user=user),
        ]
    return out


def features(records: list[dict[str, Any]], states: dict | None = None) -> pd.DataFrame:
    """History features of ``records`` (time-sorted) with ``states``."""
    return process_records(records, "duo", states)


def test_one_login_alone_scores_as_inside_the_batch() -> None:
    """A login sent alone, with the stored (JSON round-tripped) state, gets the batch's features."""
    history = habit()
    day = [
        duo(T0 + timedelta(days=20, hours=h), country=c, result=r)
        for h, c, r in [
            (13, "United States", "success"),
            (14, "Germany", "denied"),
            (15, "Japan", "success"),
        ]
    ]
    states: dict[str, UserState] = {}
    features(history, states)
    snapshot = json.dumps({u: s.to_dict() for u, s in states.items()})
    batch = features(day, states)
    restored = {u: UserState.from_dict(d) for u, d in json.loads(snapshot).items()}
    alone = pd.concat([features([rec], restored) for rec in day], ignore_index=True)
    cols = ["logcount", "locincrement", *HISTORY_FEATURES]
    pd.testing.assert_frame_equal(
        batch[cols].reset_index(drop=True), alone[cols].reset_index(drop=True)
    )
    assert list(batch["logcount"]) == [1, 2, 3]  # the per-day counter continues across requests


def test_novelty_stays_new_for_a_day_and_failures_teach_nothing() -> None:
    """A new country is new for its whole first day; a failed login never makes it known."""
    states: dict[str, UserState] = {}
    features(habit(), states)
    t = T0 + timedelta(days=20, hours=14)
    f = features(
        [
            duo(t, country="Germany", result="denied"),
            duo(t + timedelta(hours=30), country="Germany"),
            duo(t + timedelta(hours=31), country="Germany"),
            duo(t + timedelta(hours=56), country="Germany"),
        ],
        states,
    )
    assert list(f["new_country"]) == [1.0, 1.0, 1.0, 0.0]
    assert f["new_device"].sum() == 0 and f["new_browser_os"].sum() == 0


def test_failure_burst_hour_gap_and_speed() -> None:
    """Push bombing, 03:00 local and a jump across the globe each show in their feature."""
    states: dict[str, UserState] = {}
    features(habit(), states)
    base = T0 + timedelta(days=21)
    burst = [duo(base + timedelta(hours=14, seconds=30 * i), result="denied") for i in range(6)]
    f = features(burst, states)
    assert list(f["fails_recent"]) == [1, 2, 3, 4, 5, 6]
    night = features([duo(base + timedelta(hours=8, minutes=30))], states)  # ~02:00 solar, US
    assert night["hour_gap"].iloc[0] >= 4
    assert night["hour_rarity"].iloc[0] > 2
    day = features([duo(base + timedelta(hours=16))], states)
    assert day["hour_gap"].iloc[0] == 0
    far = features([duo(base + timedelta(hours=16), country="Japan")], states)
    assert far["log_speed"].iloc[0] > 3.5  # > 3,000 km/h: impossible travel
    assert far["new_country"].iloc[0] == 1


def test_unknown_users_start_empty_and_missing_columns_are_named() -> None:
    """A user never seen has no history; a frame without the needed columns is refused."""
    f = features([duo(T0, user="nobody")])
    assert f["history_depth"].iloc[0] == 0 and f["new_country"].iloc[0] == 1
    raw = extract(frame_from_records([duo(T0)]), "duo").drop(columns=["country"])
    with pytest.raises(KeyError, match="country"):
        featurize(raw, "duo")
    with pytest.raises(ValueError, match="unknown fields"):
        UserState.from_dict({"n": 1, "bogus": 2})


def test_geo_table() -> None:
    """Countries by code or name; distances are great-circle kilometres."""
    assert country_code("DE") == country_code("Germany") == "DE"
    assert centroid("Atlantis") is None
    km = haversine_km(centroid("US"), centroid("JP"))  # type: ignore[arg-type]
    assert 9_000 < km < 12_000
