"""Tiny DFP fixtures shared by the data and the model tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest

from secml.dfp.generator import azure_record, duo_record
from secml.dfp.schema import frame_from_records, process

T0 = datetime(2022, 8, 1, 8, 0, tzinfo=UTC)
USERS = ("alice@example.com", "bob.smith@example.com", "carol/ops@example.com")
_BROWSERS = ("Chrome", "Firefox", "Edge")
_OSES = ("Windows", "Mac OS X", "iOS")
_CITIES = (("Ann Arbor", "Michigan", "United States"), ("Berlin", "Berlin", "Germany"))
_APPS = ("Office 365 Exchange Online", "Microsoft Teams", "Azure Portal")


def small_duo_records(
    n_per_user: int = 40, seed: int = 0, users: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Raw Duo records: each user keeps one browser, OS, phone and city over a few days."""
    rng = random.Random(seed)
    out = []
    for u, user in enumerate(users or USERS):
        for i in range(n_per_user):
            when = T0 + timedelta(days=i // 10, minutes=37 * (i % 10) + rng.randint(0, 20))
            city, state, country = _CITIES[u % 2]
            ok = rng.random() > 0.1
            out.append(
                duo_record(
                    user=user,
                    when=when,
                    browser=_BROWSERS[u % 3],
                    os=_OSES[u % 3],
                    auth_device=f"phone-{u}",
                    city=city,
                    state=state,
                    country=country,
                    result="success" if ok else "denied",
                    reason="user_approved" if ok else "no_response",
                    rng=rng,
                )
            )
    return out


def small_azure_records(n_per_user: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    """Raw Azure AD sign-in records: each user keeps one device and city, two apps."""
    rng = random.Random(seed)
    out = []
    for u, user in enumerate(USERS):
        for i in range(n_per_user):
            when = T0 + timedelta(days=i // 10, minutes=41 * (i % 10) + rng.randint(0, 20))
            city, _, country = _CITIES[u % 2]
            ok = rng.random() > 0.1
            out.append(
                azure_record(
                    user=user,
                    when=when,
                    app=_APPS[(u + i) % 2],
                    client_app="Browser",
                    browser=_BROWSERS[u],
                    device_name=f"LAPTOP-{u}",
                    os=_OSES[u],
                    city=city,
                    country=country,
                    failure_reason=None if ok else "Invalid username or password.",
                    rng=rng,
                )
            )
    return out


@pytest.fixture
def duo_records() -> list[dict[str, Any]]:
    """Raw Duo records (3 users x 40)."""
    return small_duo_records()


@pytest.fixture
def azure_records() -> list[dict[str, Any]]:
    """Raw Azure AD records (3 users x 40)."""
    return small_azure_records()


@pytest.fixture
def small_duo_frame(duo_records: list[dict[str, Any]]) -> pd.DataFrame:
    """Processed Duo events: username, timestamp, features, event_id, raw columns."""
    return process(frame_from_records(duo_records, file="DUO_2022-08-01T08_00_00.000Z.json"), "duo")


@pytest.fixture
def small_azure_frame(azure_records: list[dict[str, Any]]) -> pd.DataFrame:
    """Processed Azure AD events: username, timestamp, features, event_id, raw columns."""
    return process(
        frame_from_records(azure_records, file="AZUREAD_2022-08-01T08_00_00.000Z.json"), "azure"
    )
