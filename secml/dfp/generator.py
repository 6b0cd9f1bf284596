"""Seeded generator of Duo and Azure AD authentication logs with labelled, injected attacks.

Records follow the real shapes: Duo Admin API v2 authentication-log records (``timestamp``
epoch seconds, ``isotimestamp``, lower-case ``result``) and Azure AD sign-in records as
exported by diagnostic settings (``time``, ``category``, ``properties{...}``). Files hold one
batch each and are named like ``DUO_2022-08-01T00_05_06.806Z.json`` (a JSON array).

Every user has habits: home city and time zone, working hours, one to three devices, browsers,
apps, a daily volume. Hard benign cases are built in: travellers (new location, known device,
local office hours, no logins on flight days), new phones and replacement laptops mid-period,
newly adopted apps, evenings worked late, night-shift workers, password typos and denied
pushes, and users with too little history for a model of their own. Attacks are injected in
the last ``attack_days`` days and labelled in a separate CSV (``labels_<source>.csv``:
``event_id`` is ``secml.store.event_id`` of the raw record): ``account_takeover`` (attacker
device, abroad or through a proxy in the victim's city),
``mfa_fatigue`` (burst of denied pushes), ``impossible_travel`` (known device, far away, an
hour after a login at home, then a short session), ``new_app`` (first access to a sensitive
application, at night), ``off_hours``, ``password_spray`` (one attacker, one or two wrong
passwords on many accounts, some of which do not exist).

CLI: ``python -m secml.dfp.generator --out DIR --source both --users 200 --days 30`` writes
``DIR/<source>-training-data/`` (days before the attack window), ``DIR/<source>-inference-data/``
(the last ``--attack-days`` days) and ``DIR/labels_<source>.csv``; ``DIR`` defaults to
``<settings.data_dir>/dfp``, where the example control messages look.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from secml.dfp.geo import haversine_km
from secml.dfp.schema import _event_id as event_id

log = logging.getLogger(__name__)

ATTACK_TYPES: tuple[str, ...] = (
    "account_takeover",
    "mfa_fatigue",
    "impossible_travel",
    "new_app",
    "off_hours",
    "password_spray",
)
FILE_PREFIX = {"duo": "DUO", "azure": "AZUREAD"}
LABEL_COLUMNS = ["event_id", "source", "username", "attack_id", "attack_type", "time"]


@dataclass(frozen=True)
class Place:
    """A city: names, ISO country code, coordinates and UTC offset (hours)."""

    city: str
    state: str
    country: str
    code: str
    lat: float
    lon: float
    utc_offset: int


PLACES: tuple[Place, ...] = (
    Place("Ann Arbor", "Michigan", "United States", "US", 42.28, -83.74, -4),
    Place("New York", "New York", "United States", "US", 40.71, -74.01, -4),
    Place("Austin", "Texas", "United States", "US", 30.27, -97.74, -5),
    Place("San Jose", "California", "United States", "US", 37.34, -121.89, -7),
    Place("Seattle", "Washington", "United States", "US", 47.61, -122.33, -7),
    Place("Toronto", "Ontario", "Canada", "CA", 43.65, -79.38, -4),
    Place("London", "England", "United Kingdom", "GB", 51.51, -0.13, 1),
    Place("Berlin", "Berlin", "Germany", "DE", 52.52, 13.40, 2),
    Place("Paris", "Ile-de-France", "France", "FR", 48.86, 2.35, 2),
    Place("Bangalore", "Karnataka", "India", "IN", 12.97, 77.59, 5),
    Place("Tel Aviv", "Tel Aviv", "Israel", "IL", 32.09, 34.78, 3),
    Place("Tokyo", "Tokyo", "Japan", "JP", 35.68, 139.69, 9),
    Place("Sydney", "New South Wales", "Australia", "AU", -33.87, 151.21, 10),
    Place("Sao Paulo", "Sao Paulo", "Brazil", "BR", -23.55, -46.63, -3),
)
# Where attackers log in from: never anyone's home or travel destination.
ATTACKER_PLACES: tuple[Place, ...] = (
    Place("Lagos", "Lagos", "Nigeria", "NG", 6.52, 3.38, 1),
    Place("Moscow", "Moscow", "Russia", "RU", 55.76, 37.62, 3),
    Place("Bucharest", "Bucharest", "Romania", "RO", 44.43, 26.10, 3),
    Place("Hanoi", "Hanoi", "Vietnam", "VN", 21.03, 105.85, 7),
    Place("Pyongyang", "Pyongyang", "North Korea", "KP", 39.04, 125.76, 9),
)
BROWSERS = ("Chrome", "Firefox", "Edge", "Safari")
OSES = ("Windows", "Mac OS X", "Linux", "iOS", "Android")
PHONES = ("iPhone", "Pixel", "Galaxy", "OnePlus")
APPS = (
    "Office 365 Exchange Online",
    "Microsoft Teams",
    "SharePoint Online",
    "OneDrive",
    "Salesforce",
    "Workday",
    "Jira",
    "Zoom",
    "GitHub Enterprise",
    "VPN",
)
RARE_APPS = ("Azure Portal", "Microsoft Graph PowerShell", "AWS Console", "Key Vault Admin")
CLIENT_APPS = ("Browser", "Mobile Apps and Desktop clients")
ATTACKER_BROWSERS = ("Chrome Headless", "Opera", "Python Requests")
ATTACKER_OSES = ("Linux", "Windows", "Android")
BENIGN_DENIALS = ("invalid_passcode", "no_response", "user_cancelled")
AZURE_FAILURES = (
    "Invalid username or password or Invalid on-premise username or password.",
    "The user didn't complete the MFA prompt.",
    "User did not pass the MFA challenge (non interactive).",
)
AZURE_MFA_DENIED = "Authentication failed during strong authentication request."
AZURE_OK = "Other."


@dataclass
class Device:
    """A user's device: browser, OS, phone name (Duo) and Azure display name."""

    browser: str
    os: str
    phone: str
    display_name: str
    client_app: str


@dataclass
class User:
    """One user's habits."""

    name: str
    key: str
    home: Place
    devices: list[Device]
    apps: list[str]
    start_hour: float
    shift_hours: float
    per_day: float
    deny_rate: float
    travel: Place | None = None
    travel_days: set[int] = field(default_factory=set)
    new_phone_day: int | None = None
    late_rate: float = 0.0
    new_laptop_day: int | None = None
    adopted_app: str | None = None
    adopt_day: int = 0


@dataclass
class Generated:
    """Records of one source (time-ordered) and the labels of the attack events."""

    source: str
    records: list[dict[str, Any]]
    labels: list[dict[str, Any]]


def _digest(text: str) -> bytes:
    """Process-independent digest of ``text`` (``hash()`` is salted per process)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _uuid(rng: random.Random) -> str:
    """A seeded UUID4 string."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ip(rng: random.Random, place: Place) -> str:
    """An IPv4 address whose first octets depend on the place (stable per city)."""
    a = 20 + (sum(map(ord, place.city)) % 180)
    b = sum(map(ord, place.country)) % 250
    return f"{a}.{b}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def duo_record(
    *,
    user: str,
    when: datetime,
    browser: str,
    os: str,
    auth_device: str,
    city: str,
    state: str,
    country: str,
    result: str,
    reason: str,
    rng: random.Random,
    app: str = "Microsoft Azure Active Directory",
    factor: str = "duo_push",
) -> dict[str, Any]:
    """One Duo Admin API v2 authentication-log record."""
    when = when.astimezone(UTC)
    loc = {"city": city, "country": country, "state": state}
    return {
        "access_device": {
            "browser": browser,
            "browser_version": f"{rng.randint(90, 120)}.0.{rng.randint(1000, 5999)}",
            "flash_version": "uninstalled",
            "hostname": None,
            "ip": f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.1",
            "is_encryption_enabled": True,
            "is_firewall_enabled": True,
            "is_password_set": True,
            "java_version": "uninstalled",
            "location": loc,
            "os": os,
            "os_version": f"{rng.randint(10, 15)}.{rng.randint(0, 9)}",
            "security_agents": None,
        },
        "alias": "",
        "application": {"key": "DI" + _digest(app).hex()[:18].upper(), "name": app},
        "auth_device": {"ip": None, "location": loc, "name": auth_device},
        "email": user if "@" in user else "",
        "event_type": "authentication",
        "factor": factor,
        "isotimestamp": when.isoformat(timespec="microseconds"),
        "ood_software": None,
        "reason": reason,
        "result": result,
        "timestamp": int(when.timestamp()),
        "trusted_endpoint_status": "not trusted",
        "txid": _uuid(rng),
        "user": {
            "groups": ["Duo Users"],
            "key": "DU" + _digest(user).hex()[:18].upper(),
            "name": user,
        },
    }


def azure_record(
    *,
    user: str,
    when: datetime,
    app: str,
    client_app: str,
    browser: str,
    device_name: str,
    os: str,
    city: str,
    country: str,
    failure_reason: str | None,
    rng: random.Random,
    state: str = "",
    error_code: int | None = None,
    tenant: str = "6f1d5e3a-4c2b-4a7e-9d1f-2b3c4d5e6f70",
) -> dict[str, Any]:
    """One Azure AD sign-in record as exported by diagnostic settings."""
    when = when.astimezone(UTC)
    iso = when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    ok = failure_reason is None
    code = 0 if ok else (error_code if error_code is not None else 50126)
    corr = _uuid(rng)
    return {
        "time": iso,
        "resourceId": f"/tenants/{tenant}/providers/Microsoft.aadiam",
        "operationName": "Sign-in activity",
        "operationVersion": "1.0",
        "category": "SignInLogs",
        "tenantId": tenant,
        "resultType": str(code),
        "resultSignature": "None",
        "resultDescription": failure_reason or "",
        "durationMs": 0,
        "callerIpAddress": f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.7",
        "correlationId": corr,
        "identity": user.split("@")[0],
        "Level": 4,
        "location": country,
        "properties": {
            "id": _uuid(rng),
            "createdDateTime": iso,
            "userDisplayName": user.split("@")[0],
            "userPrincipalName": user,
            "userId": str(uuid.UUID(bytes=_digest(user)[:16], version=4)),
            "appId": str(uuid.UUID(bytes=_digest(app)[:16], version=4)),
            "appDisplayName": app,
            "ipAddress": f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.0.7",
            "status": {"errorCode": code, "failureReason": failure_reason or AZURE_OK},
            "clientAppUsed": client_app,
            "userAgent": f"Mozilla/5.0 ({os}) {browser}",
            "deviceDetail": {
                "deviceId": "",
                "displayName": device_name,
                "operatingSystem": os,
                "browser": browser,
                "isCompliant": bool(device_name),
                "isManaged": bool(device_name),
                "trustType": "Azure AD joined" if device_name else "",
            },
            "location": {
                "city": city,
                "state": state,
                "countryOrRegion": country,
                "geoCoordinates": {},
            },
            "correlationId": corr,
            "conditionalAccessStatus": "success" if ok else "failure",
            "isInteractive": True,
            "riskDetail": "none",
            "riskLevelAggregated": "none",
            "riskLevelDuringSignIn": "none",
            "riskState": "none",
            "resourceDisplayName": app,
            "authenticationRequirement": "multiFactorAuthentication",
        },
    }


def _stable(text: str) -> int:
    """A process-independent small hash (``hash()`` is salted per process for str)."""
    return int.from_bytes(_digest(text)[:8], "big")


def make_users(
    n_users: int,
    days: int,
    rng: random.Random,
    sparse_fraction: float,
    drift_boost: float = 1.0,
    drift_from: int = 0,
) -> list[User]:
    """Draw ``n_users`` users with their own habits (a share with too little history).

    ``drift_boost`` multiplies how often benign drift (trips, new phones and laptops, adopted
    apps) happens and ``drift_from`` is the first day it may start: a training set for a
    classifier oversamples these hard negatives where its labelled days are.
    """

    def drift_day() -> int:
        return rng.randrange(min(drift_from, days - 1), max(1, days))

    first = ("alex", "sam", "li", "maria", "jose", "anna", "omar", "yuki", "ivan", "zoe", "noor")
    last = ("smith", "garcia", "chen", "muller", "kim", "rossi", "singh", "okafor", "novak")
    users: list[User] = []
    for i in range(n_users):
        name = f"{rng.choice(first)}.{rng.choice(last)}{i}@example.com"
        if i % 17 == 5:
            name = f"ops/{name}"  # odd but real: slashes in user ids
        home = rng.choice(PLACES)
        n_dev = rng.choices((1, 2, 3), weights=(5, 4, 1))[0]
        devices = []
        for d in range(n_dev):
            os_ = rng.choice(OSES)
            phone = f"{rng.choice(PHONES)} ({rng.randint(200, 999)}-555-{rng.randint(1000, 9999)})"
            devices.append(
                Device(
                    browser=rng.choice(BROWSERS),
                    os=os_,
                    phone=phone,
                    display_name=f"LAPTOP-{i:03d}{d}" if rng.random() < 0.6 else "",
                    client_app=rng.choices(CLIENT_APPS, weights=(4, 1))[0],
                )
            )
        sparse = rng.random() < sparse_fraction
        per_day = rng.uniform(0.3, 4.0) if sparse else rng.lognormvariate(math.log(16), 0.35)
        night = rng.random() < 0.08  # night shift: a hard benign case for off-hours
        user = User(
            name=name,
            key=f"DU{i:018d}",
            home=home,
            devices=devices,
            apps=rng.sample(APPS, rng.randint(2, 5)),
            start_hour=rng.uniform(20.0, 23.0) if night else rng.uniform(7.0, 10.0),
            shift_hours=rng.uniform(7.0, 10.0),
            per_day=per_day,
            deny_rate=rng.uniform(0.01, 0.08),
        )
        if rng.random() < 0.15 * drift_boost:  # traveller: new location on known devices
            user.travel = rng.choice([p for p in PLACES if p.country != home.country])
            start = drift_day()
            user.travel_days = set(range(start, min(days, start + rng.randint(2, 5))))
        if rng.random() < 0.1 * drift_boost:  # new phone mid-period: new auth device
            user.new_phone_day = drift_day()
        if rng.random() < 0.1 * drift_boost:  # replacement laptop: new browser, OS, name
            user.new_laptop_day = drift_day()
            user.devices.append(
                Device(
                    browser=rng.choice(BROWSERS),
                    os=rng.choice(OSES[:3]),
                    phone=user.devices[0].phone,
                    display_name=f"LAPTOP-{i:03d}N",
                    client_app=user.devices[0].client_app,
                )
            )
        user.late_rate = rng.uniform(0.0, 0.08)  # some evenings run 1-3 h past the shift
        if rng.random() < 0.15 * drift_boost:  # adopts an ordinary app: benign first use
            user.adopted_app = rng.choice([a for a in APPS if a not in user.apps])
            user.adopt_day = drift_day()
        users.append(user)
    return users


def _phone(user: User, dev: Device, day: int) -> str:
    """The phone the user pushes to on ``day`` (changes if they got a new one)."""
    if user.new_phone_day is not None and day >= user.new_phone_day:
        return f"{dev.phone.split(' ')[0]} 15 ({_stable(user.name) % 900 + 100}-555-0100)"
    return dev.phone


def _event(
    source: str,
    user: User,
    when: datetime,
    *,
    dev: Device,
    place: Place,
    app: str,
    ok: bool,
    rng: random.Random,
    day: int,
    phone: str | None = None,
    denial: str | None = None,
    azure_failure: str | None = None,
    azure_code: int | None = None,
) -> dict[str, Any]:
    """One record of ``source`` for ``user``."""
    if source == "duo":
        reason = rng.choice(("user_approved", "user_approved", "valid_passcode"))
        result = "success"
        if not ok:
            reason = denial or rng.choice(BENIGN_DENIALS)
            result = "fraud" if reason == "user_marked_fraud" else "denied"
        return duo_record(
            user=user.name,
            when=when,
            browser=dev.browser,
            os=dev.os,
            auth_device=phone or _phone(user, dev, day),
            city=place.city,
            state=place.state,
            country=place.country,
            result=result,
            reason=reason,
            rng=rng,
            app=app,
        )
    failure = None if ok else (azure_failure or rng.choice(AZURE_FAILURES))
    return azure_record(
        user=user.name,
        when=when,
        app=app,
        client_app=dev.client_app,
        browser=dev.browser,
        device_name=dev.display_name,
        os=dev.os,
        city=place.city,
        country=place.code,
        state=place.state,
        failure_reason=failure,
        error_code=azure_code,
        rng=rng,
    )


def _work_time(user: User, day0: date, rng: random.Random, place: Place | None = None) -> datetime:
    """A time inside the user's working hours on local ``day0`` at ``place`` (home), in UTC."""
    local_h = user.start_hour + rng.uniform(0, user.shift_hours)
    local = datetime(day0.year, day0.month, day0.day, tzinfo=UTC) + timedelta(hours=local_h)
    return local - timedelta(hours=(place or user.home).utc_offset)


def _benign(
    source: str, users: list[User], start: date, days: int, rng: random.Random
) -> list[dict[str, Any]]:
    """Every user's normal activity over ``days`` days."""
    out = []
    for user in users:
        for day in range(days):
            devices = user.devices
            if user.new_laptop_day is not None:  # the old laptop is gone, the new one in use
                devices = devices[1:] if day >= user.new_laptop_day else devices[:-1]
            weights = [6] + [2] * (len(devices) - 1)
            d = start + timedelta(days=day)
            weekend = d.weekday() >= 5
            lam = user.per_day * (0.25 if weekend else 1.0)
            n = _poisson(rng, lam)
            place = user.travel if day in user.travel_days and user.travel else user.home
            if user.travel_days and day in (min(user.travel_days), max(user.travel_days) + 1):
                n = 0  # flying out or back: no logins that day
            apps = list(user.apps)
            if user.adopted_app and day >= user.adopt_day:
                apps.append(user.adopted_app)
            for _ in range(n):
                when = _work_time(user, d, rng, place)  # travellers keep local office hours
                if rng.random() < user.late_rate:
                    when += timedelta(hours=rng.uniform(1.0, 3.0))
                dev = rng.choices(devices, weights=weights)[0]
                app = rng.choices(apps, weights=range(len(apps), 0, -1))[0]
                ok = rng.random() > user.deny_rate
                out.append(
                    _event(
                        source, user, when, dev=dev, place=place, app=app, ok=ok, rng=rng, day=day
                    )
                )
    return out


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's Poisson sampler (small ``lam``), normal approximation above 30."""
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def _attacker_device(rng: random.Random) -> Device:
    """A device no user owns."""
    return Device(
        browser=rng.choice(ATTACKER_BROWSERS),
        os=rng.choice(ATTACKER_OSES),
        phone=f"Generic Android ({rng.randint(200, 999)}-555-{rng.randint(1000, 9999)})",
        display_name="",
        client_app=rng.choice(CLIENT_APPS),
    )


def _attacks(
    source: str,
    users: list[User],
    start: date,
    days: int,
    attack_days: int,
    n_attacks: int,
    rng: random.Random,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inject ``n_attacks`` attacks (types in turn) in the last ``attack_days`` days."""
    records: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []
    first_day = max(0, days - attack_days)
    # attacks start inside the window in UTC, so none leaks into the training days
    window = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=first_day)
    for k in range(n_attacks):
        kind = ATTACK_TYPES[k % len(ATTACK_TYPES)]
        user = rng.choice(users)
        day = rng.randrange(first_day, days)
        d = start + timedelta(days=day)
        when = _after(_work_time(user, d, rng), window)
        own = rng.choice(user.devices)
        events: list[dict[str, Any]] = []
        attack_id = f"{source}-{k:04d}-{kind}"
        if kind == "account_takeover":
            dev, place = _attacker_device(rng), _attacker_place(user, rng)
            for j in range(rng.randint(1, 3)):
                events.append(
                    _event(
                        source,
                        user,
                        when + timedelta(minutes=3 * j),
                        dev=dev,
                        place=place,
                        app=rng.choice(user.apps),
                        ok=True,
                        rng=rng,
                        day=day,
                        phone=dev.phone,
                    )
                )
        elif kind == "mfa_fatigue":
            dev, place = _attacker_device(rng), _attacker_place(user, rng)
            for j in range(rng.randint(8, 25)):
                denial = "user_marked_fraud" if rng.random() < 0.15 else "no_response"
                events.append(
                    _event(
                        source,
                        user,
                        when + timedelta(seconds=40 * j),
                        dev=dev,
                        place=place,
                        app=user.apps[0],
                        ok=False,
                        rng=rng,
                        day=day,
                        denial=denial,
                        azure_failure=AZURE_MFA_DENIED,
                        azure_code=500121,
                    )
                )
        elif kind == "impossible_travel":
            home = user.travel if day in user.travel_days and user.travel else user.home
            records.append(
                _event(
                    source,
                    user,
                    when,
                    dev=own,
                    place=home,
                    app=user.apps[0],
                    ok=True,
                    rng=rng,
                    day=day,
                )
            )
            far = max(PLACES + ATTACKER_PLACES, key=lambda p: _km(p, home) + rng.random() * 3000)
            t_far = when + timedelta(minutes=rng.randint(20, 90))
            for j in range(rng.randint(1, 4)):  # a replayed session: one or more logins
                events.append(
                    _event(
                        source,
                        user,
                        t_far + timedelta(minutes=11 * j),
                        dev=own,
                        place=far,
                        app=rng.choice(user.apps),
                        ok=True,
                        rng=rng,
                        day=day,
                    )
                )
        elif kind == "new_app":  # a sensitive app the user never used, at night, own device
            app = rng.choice([a for a in RARE_APPS if a not in user.apps])
            t0 = _after(_night(user, d, rng), window)
            for j in range(rng.randint(1, 2)):
                events.append(
                    _event(
                        source,
                        user,
                        t0 + timedelta(minutes=9 * j),
                        dev=own,
                        place=user.home,
                        app=app,
                        ok=True,
                        rng=rng,
                        day=day,
                    )
                )
        elif kind == "password_spray":
            events, user = _spray(source, users, when, rng, day), None
        else:  # off_hours: 01:00-04:30 local on a known device from home
            t0 = _after(_night(user, d, rng), window)
            for j in range(rng.randint(1, 3)):
                events.append(
                    _event(
                        source,
                        user,
                        t0 + timedelta(minutes=7 * j),
                        dev=own,
                        place=user.home,
                        app=rng.choice(user.apps),
                        ok=True,
                        rng=rng,
                        day=day,
                    )
                )
        for rec in events:
            labels.append(
                {
                    "event_id": event_id(rec),
                    "source": source,
                    "username": _record_user(source, rec),
                    "attack_id": attack_id,
                    "attack_type": kind,
                    "time": _record_time(source, rec).isoformat(),
                }
            )
        records.extend(events)
    return records, labels


def _attacker_place(user: User, rng: random.Random) -> Place:
    """Where an attacker logs in from: abroad, or a proxy in the victim's own city (a third)."""
    return user.home if rng.random() < 0.35 else rng.choice(ATTACKER_PLACES)


def _night(user: User, d: date, rng: random.Random) -> datetime:
    """01:00-04:30 local time at home on ``d`` (midday for night-shift workers), in UTC."""
    local = datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(hours=rng.uniform(1.0, 4.5))
    if user.start_hour > 18:  # night-shift workers: their off-hours are midday
        local += timedelta(hours=11)
    return local - timedelta(hours=user.home.utc_offset)


def _spray(
    source: str, users: list[User], when: datetime, rng: random.Random, day: int
) -> list[dict[str, Any]]:
    """Password spray: one attacker tries 1-2 passwords on many accounts, some that don't exist."""
    dev, place = _attacker_device(rng), rng.choice(ATTACKER_PLACES)
    targets = rng.sample(users, min(len(users), rng.randint(4, 12)))
    for k in range(rng.randint(1, 4)):  # guessed account names nobody has
        name = f"{rng.choice(('admin', 'test', 'svc', 'backup', 'hr'))}{rng.randint(1, 99)}"
        targets.append(make_users(1, 1, random.Random(f"{name}-{k}"), 0.0)[0])
        targets[-1].name = f"{name}@example.com"
    events = []
    for i, target in enumerate(targets):
        for j in range(rng.randint(1, 2)):
            events.append(
                _event(
                    source,
                    target,
                    when + timedelta(seconds=25 * i + 5 * j),
                    dev=dev,
                    place=place,
                    app=rng.choice(APPS[:3]),
                    ok=False,
                    rng=rng,
                    day=day,
                    phone=dev.phone,
                    denial="invalid_passcode",
                    azure_failure=AZURE_FAILURES[0],
                    azure_code=50126,
                )
            )
    return events


def _record_user(source: str, rec: dict[str, Any]) -> str:
    """The user name of a record of ``source``."""
    return rec["user"]["name"] if source == "duo" else rec["properties"]["userPrincipalName"]


def _after(when: datetime, window: datetime) -> datetime:
    """``when`` moved on by whole days until it is inside the attack window."""
    while when < window:
        when += timedelta(days=1)
    return when


def _km(a: Place, b: Place) -> float:
    """Great-circle distance in km."""
    return haversine_km((a.lat, a.lon), (b.lat, b.lon))


def _record_time(source: str, rec: dict[str, Any]) -> datetime:
    """Event time of a generated record (UTC)."""
    if source == "duo":
        return datetime.fromisoformat(rec["isotimestamp"])
    return datetime.strptime(rec["time"][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def generate(
    source: str,
    *,
    n_users: int = 200,
    days: int = 30,
    start: date = date(2022, 8, 1),
    seed: int = 42,
    attack_days: int = 2,
    n_attacks: int = 60,
    sparse_fraction: float = 0.2,
    drift_boost: float = 1.0,
    drift_from: int = 0,
) -> Generated:
    """Generate one source's records (time-ordered) and attack labels; same seed, same data."""
    if source not in FILE_PREFIX:
        raise ValueError(f"unknown source {source!r}; expected duo or azure")
    if n_users < 1 or days < 1 or attack_days < 0 or n_attacks < 0:
        raise ValueError("n_users and days must be >= 1; attack_days and n_attacks >= 0")
    rng = random.Random(f"{seed}")
    users = make_users(n_users, days, rng, sparse_fraction, drift_boost, drift_from)
    rng = random.Random(f"{seed}-{source}")
    records = _benign(source, users, start, days, rng)
    attack_records, labels = _attacks(source, users, start, days, attack_days, n_attacks, rng)
    records.extend(attack_records)
    records.sort(key=lambda r: _record_time(source, r))
    log.info(
        "%s: %d records, %d attack events, %d users", source, len(records), len(labels), n_users
    )
    return Generated(source=source, records=records, labels=labels)


def batch_file_name(source: str, when: datetime) -> str:
    """File name of a batch starting at ``when``: ``DUO_2022-08-01T00_05_06.806Z.json``."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H_%M_%S.%f")[:-3]
    return f"{FILE_PREFIX[source]}_{stamp}Z.json"


def write_batches(gen: Generated, out_dir: Path, file_hours: float = 6.0) -> list[Path]:
    """Write records as JSON-array files, one per ``file_hours`` window, named by first event."""
    out_dir.mkdir(parents=True, exist_ok=True)
    width = timedelta(hours=file_hours)
    paths: list[Path] = []
    chunk: list[dict[str, Any]] = []
    chunk_end: datetime | None = None
    for rec in gen.records:
        t = _record_time(gen.source, rec)
        if chunk and chunk_end is not None and t >= chunk_end:
            paths.append(_write_chunk(gen.source, chunk, out_dir))
            chunk = []
        if not chunk:
            epoch = datetime(1970, 1, 1, tzinfo=UTC)
            chunk_end = epoch + ((t - epoch) // width + 1) * width
        chunk.append(rec)
    if chunk:
        paths.append(_write_chunk(gen.source, chunk, out_dir))
    return paths


def _write_chunk(source: str, chunk: list[dict[str, Any]], out_dir: Path) -> Path:
    """Write one batch file."""
    path = out_dir / batch_file_name(source, _record_time(source, chunk[0]))
    path.write_text(json.dumps(chunk, indent=None), encoding="utf-8")
    return path


def write_labels(gen: Generated, out_dir: Path) -> Path:
    """Write the attack labels to ``labels_<source>.csv`` (apart from the logs)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"labels_{gen.source}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        writer.writerows(gen.labels)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(
        prog="python -m secml.dfp.generator", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--out", type=Path, default=None, help="output directory (default <data_dir>/dfp)"
    )
    p.add_argument("--source", choices=("duo", "azure", "both"), default="both")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--days", type=int, default=31)
    p.add_argument("--start", type=date.fromisoformat, default=date(2022, 8, 1))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--attack-days", type=int, default=2, help="last days: inference data")
    p.add_argument("--attacks", type=int, default=60)
    p.add_argument("--sparse-fraction", type=float, default=0.2)
    p.add_argument("--file-hours", type=float, default=6.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = args.out
    if out is None:
        from secml.settings import get_settings

        out = Path(get_settings().data_dir) / "dfp"
    sources = ("duo", "azure") if args.source == "both" else (args.source,)
    split = datetime.combine(args.start, datetime.min.time(), UTC) + timedelta(
        days=args.days - args.attack_days
    )
    for source in sources:
        gen = generate(
            source,
            n_users=args.users,
            days=args.days,
            start=args.start,
            seed=args.seed,
            attack_days=args.attack_days,
            n_attacks=args.attacks,
            sparse_fraction=args.sparse_fraction,
        )
        write_dataset(gen, out, split, args.file_hours)
    return 0


def write_dataset(gen: Generated, out: Path, split: datetime, file_hours: float = 6.0) -> None:
    """Write ``<source>-training-data`` (before ``split``), ``-inference-data`` and labels."""
    train, infer = split_at(gen, split)
    for part, name in ((train, "training"), (infer, "inference")):
        folder = out / f"{gen.source}-{name}-data"
        files = write_batches(part, folder, file_hours)
        log.info(
            "%s: %d records in %d files under %s", gen.source, len(part.records), len(files), folder
        )
    log.info(
        "%s: %d attack events labelled in %s", gen.source, len(gen.labels), write_labels(gen, out)
    )


def split_at(gen: Generated, when: datetime) -> tuple[Generated, Generated]:
    """Records before ``when`` (training data) and from ``when`` on (inference data)."""
    before = [r for r in gen.records if _record_time(gen.source, r) < when]
    after = [r for r in gen.records if _record_time(gen.source, r) >= when]
    ids = {event_id(r) for r in after}
    return (
        Generated(gen.source, before, [lb for lb in gen.labels if lb["event_id"] not in ids]),
        Generated(gen.source, after, [lb for lb in gen.labels if lb["event_id"] in ids]),
    )


if __name__ == "__main__":
    raise SystemExit(main())
