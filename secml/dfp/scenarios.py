"""Second, independent DFP scenario set: seeded Duo and Entra ID sign-in logs from a simulated org.

Why a second generator: a detector tuned on ``secml.dfp.generator`` can learn that generator's
quirks. This module builds its data from a different model of the world, written from the public
log documentation only (Duo Admin API v2 ``/admin/v2/logs/authentication`` records and Microsoft
Entra ID ``SignInLogs`` records exported by diagnostic settings), so a model trained on one set can
be judged on the other. It shares nothing with ``generator.py`` but the output file contract.

The world:

* An organisation with offices in a dozen countries (UTC offsets -8 to +10, half hours
  included). Each person has a department, a home office plus 0-2 other offices, remote-work
  days, working hours in local time with a lunch dip, weekday/weekend habits, leave, 1-4
  endpoints (laptop, office desktop, phone, tablet) and an MFA phone or token. Daily volume is
  gamma-Poisson (over-dispersed) sessions of geometric length; ~20% are light users (under
  ~300 events in total), some heavy users have well over a thousand; a few work night shifts;
  a few service-like accounts sign in around the clock. Browsers auto-update during the history.
* Duo and Entra ID have their own application catalogues; each person's app mix is a Zipf-weighted
  draw from department apps; IT staff use a few admin apps. Entra sign-ins carry MFA interrupts
  (50074, 50140), Duo logs remembered devices; both have benign typos, denied and timed-out pushes.
* Benign drift on the scored days, listed in ``benign_<source>.csv`` (``travel``, ``new_laptop``,
  ``new_app``, ``late_work``, ``typo``, ``vpn_egress``): hard negatives for the detector.
* Attacks on the scored days, listed in ``labels_<source>.csv``: ``account_takeover``,
  ``mfa_fatigue``, ``impossible_travel``, ``sensitive_app_night``, ``off_hours`` and
  ``password_spray`` (including accounts that do not exist).

Output (``generate``/CLI): ``DIR/<source>-training-data/`` (``days`` history days, benign only),
``DIR/<source>-inference-data/`` (the next ``score_days`` days), ``DIR/labels_<source>.csv`` and
``DIR/benign_<source>.csv``; batch files are JSON arrays named ``DUO_<utc time>Z.json`` or
``AZUREAD_<utc time>Z.json``, read by ``secml.dfp.loader.load_records``.

CLI: ``python -m secml.dfp.scenarios --out DIR --source both --users 120 --days 30 --score-days 2
--seed 0``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from secml.dfp.geo import haversine_km
from secml.dfp.schema import _event_id

log = logging.getLogger(__name__)

ATTACK_TYPES: tuple[str, ...] = (
    "account_takeover",
    "mfa_fatigue",
    "impossible_travel",
    "sensitive_app_night",
    "off_hours",
    "password_spray",
)
BENIGN_KINDS: tuple[str, ...] = (
    "travel",
    "new_laptop",
    "new_app",
    "late_work",
    "typo",
    "vpn_egress",
)
LABEL_COLUMNS: tuple[str, ...] = (
    "event_id",
    "source",
    "username",
    "attack_id",
    "attack_type",
    "time",
)
BENIGN_COLUMNS: tuple[str, ...] = ("event_id", "username", "kind")
PREFIX: dict[str, str] = {"duo": "DUO", "azure": "AZUREAD"}
DOMAIN = "harbourline.io"
TENANT = "6f1c2a9e-4b7d-4e35-9a0c-3d8e21b5c7f4"
DEFAULT_START = date(2023, 3, 6)


# --------------------------------------------------------------------------------------------
# Places


@dataclass(frozen=True)
class City:
    """A place as both logs describe it, with its (fixed, DST-free) UTC offset in hours."""

    name: str
    state: str
    country: str
    iso2: str
    lat: float
    lon: float
    utc: float


def _c(name: str, state: str, country: str, iso2: str, lat: float, lon: float, utc: float) -> City:
    return City(name, state, country, iso2, lat, lon, utc)


# Offices (people live and work here).
OFFICES: tuple[City, ...] = (
    _c("Seattle", "Washington", "United States", "US", 47.61, -122.33, -8),
    _c("Austin", "Texas", "United States", "US", 30.27, -97.74, -6),
    _c("Raleigh", "North Carolina", "United States", "US", 35.78, -78.64, -5),
    _c("Calgary", "Alberta", "Canada", "CA", 51.05, -114.07, -7),
    _c("Montreal", "Quebec", "Canada", "CA", 45.50, -73.57, -5),
    _c("St. John's", "Newfoundland and Labrador", "Canada", "CA", 47.56, -52.71, -3.5),
    _c("Sao Paulo", "Sao Paulo", "Brazil", "BR", -23.55, -46.63, -3),
    _c("Dublin", "Leinster", "Ireland", "IE", 53.35, -6.26, 0),
    _c("Utrecht", "Utrecht", "Netherlands", "NL", 52.09, 5.12, 1),
    _c("Krakow", "Lesser Poland", "Poland", "PL", 50.06, 19.94, 1),
    _c("Pune", "Maharashtra", "India", "IN", 18.52, 73.86, 5.5),
    _c("Hyderabad", "Telangana", "India", "IN", 17.39, 78.49, 5.5),
    _c("Singapore", "Central Singapore", "Singapore", "SG", 1.35, 103.82, 8),
    _c("Osaka", "Osaka", "Japan", "JP", 34.69, 135.50, 9),
    _c("Adelaide", "South Australia", "Australia", "AU", -34.93, 138.60, 9.5),
    _c("Brisbane", "Queensland", "Australia", "AU", -27.47, 153.03, 10),
)
# Relative weight of each office in head count (same order as OFFICES).
OFFICE_SIZE: tuple[float, ...] = (9, 6, 5, 3, 4, 1.5, 4, 5, 4, 4, 6, 4, 2, 2, 1.5, 2.5)
# Other cities in the offices' countries: corporate VPN egress points.
VPN_HUBS: tuple[City, ...] = (
    _c("Denver", "Colorado", "United States", "US", 39.74, -104.99, -7),
    _c("Atlanta", "Georgia", "United States", "US", 33.75, -84.39, -5),
    _c("Vancouver", "British Columbia", "Canada", "CA", 49.28, -123.12, -8),
    _c("Campinas", "Sao Paulo", "Brazil", "BR", -22.91, -47.06, -3),
    _c("Cork", "Munster", "Ireland", "IE", 51.90, -8.47, 0),
    _c("Eindhoven", "North Brabant", "Netherlands", "NL", 51.44, 5.47, 1),
    _c("Warsaw", "Masovia", "Poland", "PL", 52.23, 21.01, 1),
    _c("Bengaluru", "Karnataka", "India", "IN", 12.97, 77.59, 5.5),
    _c("Fukuoka", "Fukuoka", "Japan", "JP", 33.59, 130.40, 9),
    _c("Perth", "Western Australia", "Australia", "AU", -31.95, 115.86, 8),
)
# Business-trip destinations (besides the other countries' offices).
TRIPS: tuple[City, ...] = (
    _c("Zurich", "Zurich", "Switzerland", "CH", 47.37, 8.54, 1),
    _c("Stockholm", "Stockholm", "Sweden", "SE", 59.33, 18.07, 1),
    _c("Madrid", "Madrid", "Spain", "ES", 40.42, -3.70, 1),
    _c("Dubai", "Dubai", "United Arab Emirates", "AE", 25.20, 55.27, 4),
    _c("Seoul", "Seoul", "South Korea", "KR", 37.57, 126.98, 9),
    _c("Mexico City", "Mexico City", "Mexico", "MX", 19.43, -99.13, -6),
    _c("Johannesburg", "Gauteng", "South Africa", "ZA", -26.20, 28.05, 2),
    _c("Kathmandu", "Bagmati", "Nepal", "NP", 27.72, 85.32, 5.75),
    _c("Boston", "Massachusetts", "United States", "US", 42.36, -71.06, -5),
)
# Where attackers (or their rented servers and proxies) are.
ATTACKER_CITIES: tuple[City, ...] = (
    _c("Lagos", "Lagos", "Nigeria", "NG", 6.52, 3.38, 1),
    _c("Bucharest", "Bucharest", "Romania", "RO", 44.43, 26.10, 2),
    _c("Hanoi", "Hanoi", "Vietnam", "VN", 21.03, 105.85, 7),
    _c("Jakarta", "Jakarta", "Indonesia", "ID", -6.21, 106.85, 7),
    _c("Almaty", "Almaty", "Kazakhstan", "KZ", 43.24, 76.89, 5),
    _c("Chisinau", "Chisinau", "Moldova", "MD", 47.01, 28.86, 2),
    _c("Caracas", "Capital District", "Venezuela", "VE", 10.48, -66.90, -4),
    _c("Dhaka", "Dhaka", "Bangladesh", "BD", 23.81, 90.41, 6),
    _c("Manila", "Metro Manila", "Philippines", "PH", 14.60, 120.98, 8),
    _c("Cairo", "Cairo", "Egypt", "EG", 30.04, 31.24, 2),
    _c("Lima", "Lima", "Peru", "PE", -12.05, -77.04, -5),
    _c("Tashkent", "Tashkent", "Uzbekistan", "UZ", 41.30, 69.24, 5),
    _c("Frankfurt am Main", "Hesse", "Germany", "DE", 50.11, 8.68, 1),
    _c("Ashburn", "Virginia", "United States", "US", 39.04, -77.49, -5),
)


def km(a: City, b: City) -> float:
    """Great-circle distance in km."""
    return haversine_km((a.lat, a.lon), (b.lat, b.lon))


# --------------------------------------------------------------------------------------------
# Applications


@dataclass(frozen=True)
class App:
    """An application (Duo integration or Entra enterprise app)."""

    name: str
    depts: frozenset[str]  # empty: everyone
    mobile: bool = False  # used from phones
    desktop: bool = False  # Entra: a rich client rather than a browser
    sensitive: bool = False
    mobile_only: bool = False


def _apps(rows: Sequence[tuple[str, str, str]], sensitive: bool = False) -> tuple[App, ...]:
    """Catalogue rows: (name, departments or '*', flags: m=mobile d=desktop o=mobile only)."""
    out = []
    for name, depts, flags in rows:
        ds = frozenset() if depts == "*" else frozenset(depts.split())
        out.append(App(name, ds, "m" in flags, "d" in flags, sensitive, "o" in flags))
    return tuple(out)


CATALOG: dict[str, tuple[App, ...]] = {
    "duo": _apps(
        [
            ("Palo Alto GlobalProtect", "*", ""),
            ("Workday", "*", "m"),
            ("Slack Enterprise Grid", "*", "m"),
            ("Zoom SSO", "*", "m"),
            ("Box", "*", "m"),
            ("SAP Concur", "sales finance", "m"),
            ("Citrix Workspace", "finance support hr", ""),
            ("Atlassian Jira Cloud", "eng support it", ""),
            ("Confluence Data Center", "eng it", ""),
            ("Salesforce Sales Cloud", "sales", "m"),
            ("ServiceNow ITSM", "support it", ""),
            ("GitLab (SAML)", "eng", ""),
            ("Linux Bastion (SSH)", "eng it", ""),
            ("RD Gateway", "it finance", ""),
            ("Tableau Cloud", "finance sales", ""),
            ("NetSuite", "finance", ""),
            ("Greenhouse Recruiting", "hr", ""),
            ("Zendesk", "support", "m"),
        ]
    ),
    "azure": _apps(
        [
            ("Windows Sign In", "*", "d"),
            ("Outlook Mobile", "*", "mo"),
            ("OneDrive SyncEngine", "*", "d"),
            ("Viva Engage", "*", "m"),
            ("Microsoft Planner", "*", ""),
            ("Workday", "*", "m"),
            ("Zoom", "*", "md"),
            ("Slack", "*", "md"),
            ("Power BI Service", "finance sales", ""),
            ("Atlassian Cloud", "eng support it", ""),
            ("GitHub Enterprise Cloud", "eng", ""),
            ("Salesforce", "sales", "m"),
            ("ServiceNow", "support it", ""),
            ("SAP Concur", "sales finance", "m"),
            ("DocuSign", "hr finance sales", ""),
            ("Miro", "eng sales", ""),
            ("Greenhouse", "hr", ""),
            ("Zendesk", "support", "m"),
        ]
    ),
}
SENSITIVE: dict[str, tuple[App, ...]] = {
    "duo": _apps(
        [
            ("Duo Admin Panel", "it", ""),
            ("AWS IAM Identity Center - Admin", "it eng", ""),
            ("Domain Controller (RDP)", "it", ""),
            ("HashiCorp Vault", "it eng", ""),
            ("VMware vCenter", "it", ""),
            ("ADP Payroll Admin", "hr finance", ""),
            ("Palo Alto Panorama", "it", ""),
        ],
        sensitive=True,
    ),
    "azure": _apps(
        [
            ("Microsoft Graph Command Line Tools", "it", "d"),
            ("Azure Key Vault", "it eng", ""),
            ("Microsoft Intune", "it", ""),
            ("Azure Active Directory PowerShell", "it", "d"),
            ("Microsoft Exchange Online Remote PowerShell", "it", "d"),
            ("Azure Resource Manager", "it eng", ""),
        ],
        sensitive=True,
    ),
}
DEPTS: tuple[str, ...] = ("eng", "sales", "finance", "hr", "support", "it")
DEPT_W: tuple[float, ...] = (0.3, 0.2, 0.12, 0.08, 0.18, 0.12)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _guid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _stable_guid(text: str) -> str:
    """A GUID derived from a name (app ids stay the same across seeds, like real ones)."""
    return _guid(random.Random(f"appid:{text}"))


def _duo_key(prefix: str, text: str) -> str:
    r = random.Random(f"duokey:{prefix}:{text}")
    return prefix + "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(18))


# --------------------------------------------------------------------------------------------
# People and devices


@dataclass
class Device:
    """An endpoint or an MFA device."""

    kind: str  # laptop, desktop, phone, tablet, token, attacker
    duo_os: str
    duo_os_version: str
    browser: str  # family, e.g. "Chrome"
    major: int
    az_os: str
    name: str  # Entra display name / Duo auth device name
    device_id: str
    trust: str  # Entra trustType
    managed: bool
    compliant: bool
    bump_day: int | None = None  # browser auto-update day (history only)

    def version(self, day: int) -> int:
        """Browser major version on ``day``."""
        return self.major + (1 if self.bump_day is not None and day >= self.bump_day else 0)


_LAPTOPS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str]] = {
    # family: (Duo os, Duo os versions, browsers, Entra os)
    "win": ("Windows", ("10", "11"), ("Chrome", "Edge Chromium", "Firefox"), "Windows10"),
    "mac": ("Mac OS X", ("13.6.4", "14.2.1", "14.4"), ("Chrome", "Safari", "Firefox"), "MacOs"),
    "linux": ("Linux", ("Ubuntu 22.04", "Fedora 39"), ("Firefox", "Chrome"), "Linux"),
    "chromeos": ("Chrome OS", ("120", "121"), ("Chrome",), "ChromeOS"),
}
_BROWSER_MAJOR = {
    "Chrome": 121,
    "Edge Chromium": 121,
    "Firefox": 122,
    "Safari": 17,
    "Mobile Safari": 17,
    "Chrome Mobile": 121,
    "Samsung Internet": 23,
}
_PHONES = (
    ("iPhone 13", "iOS", "16.7.5", "Mobile Safari", "Ios"),
    ("iPhone 14 Pro", "iOS", "17.3.1", "Mobile Safari", "Ios"),
    ("iPhone 15", "iOS", "17.4", "Mobile Safari", "Ios"),
    ("Pixel 7a", "Android", "14", "Chrome Mobile", "Android"),
    ("Galaxy S23", "Android", "14", "Samsung Internet", "Android"),
    ("Galaxy A54", "Android", "13", "Chrome Mobile", "Android"),
    ("moto g stylus", "Android", "13", "Chrome Mobile", "Android"),
)
_FIRST = (
    "amara ben chiara dmitri elif farah goran hana ines jonas kofi lena mateo nadia oskar priya "
    "quentin rosa sanjay tamsin ugo valentina wei xenia yusuf zofia aarav beatriz callum daniela "
    "emeka freya gustavo hiroshi ingrid jae kavya luca mei noor olu pilar rafael sven thandi"
).split()
_LAST = (
    "abara bergstrom castellanos dubois eriksen fonseca gallagher haddad ivanova jankowski kaur "
    "lindqvist mbeki nakamura oconnell petrov quispe rahman sato tremblay urbina vasquez "
    "wojcik xu yamamoto zeller achterberg bianchi chowdhury delacroix ekwueme fitzgerald"
).split()
_SERVICE = ("svc-backup-agent", "svc-print-relay", "svc-ci-runner", "svc-hr-sync")
# Names tried by sprayers that no one in the directory has.
_GHOSTS = (
    "admin administrator test test1 scanner backup info helpdesk hr it.support training01 "
    "guest sales reception j.smith m.jones finance root webmaster"
).split()


@dataclass
class Person:
    """One account and its habits."""

    idx: int
    duo_name: str
    upn: str
    display: str
    dept: str
    home: City
    offices: list[City]
    remote_p: float
    start_h: float  # local work start
    length_h: float
    night: bool
    weekday_p: float
    weekend_p: float
    sessions: float  # mean sessions per active day
    per_session: float  # mean events per session
    gap_min: float  # mean minutes between events of a session
    evening_p: float  # chance of an evening phone check (19:30-22:00)
    endpoints: list[Device]
    endpoint_w: list[float]
    mfa: Device
    factor: str  # Duo factor: duo_push, passcode, phone_call, sms_passcode
    remember_p: float
    typo_p: float
    home_ip: str
    leave: set[int]
    service: bool = False
    user_key: str = ""
    user_id: str = ""
    groups: list[str] = field(default_factory=list)

    @property
    def tz(self) -> float:
        return self.home.utc

    @property
    def laptop(self) -> Device:
        return self.endpoints[0]


_IP_FIRST = (23, 31, 37, 45, 62, 77, 81, 89, 91, 103, 109, 124, 146, 151, 176, 188, 195, 203, 212)


def _ip(rng: random.Random, prefix: str | None = None) -> str:
    if prefix:
        return f"{prefix}.{rng.randint(2, 250)}"
    return (
        f"{rng.choice(_IP_FIRST)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(2, 250)}"
    )


def _net(key: str, seed: int) -> str:
    """A /24 (as 'a.b.c') fixed per place and seed: office egress, VPN pools, carriers."""
    r = random.Random(f"net:{seed}:{key}")
    return f"{r.choice(_IP_FIRST)}.{r.randint(0, 255)}.{r.randint(0, 255)}"


def _endpoint(rng: random.Random, kind: str, family: str, serial: int, day_span: int) -> Device:
    if kind in ("phone", "tablet"):
        model, os_, ver, browser, az = rng.choice(_PHONES)
        if kind == "tablet":
            model, os_, browser, az = "iPad Air", "iOS", "Mobile Safari", "Ios"
        return Device(
            kind,
            os_,
            ver,
            browser,
            _BROWSER_MAJOR[browser],
            az,
            model,
            _guid(rng),
            "Azure AD registered",
            False,
            rng.random() < 0.7,
            rng.randint(3, max(4, day_span - 4)) if rng.random() < 0.3 else None,
        )
    os_, versions, browsers, az = _LAPTOPS[family]
    browser = rng.choice(browsers)
    tag = "D" if kind == "desktop" else ("M" if family == "mac" else "L")
    return Device(
        kind,
        os_,
        rng.choice(versions),
        browser,
        _BROWSER_MAJOR[browser],
        az,
        f"HBL-{tag}{serial:05d}",
        _guid(rng),
        rng.choice(("Azure AD joined", "Hybrid Azure AD joined")) if family == "win" else "",
        family != "linux",
        rng.random() < 0.9,
        rng.randint(3, max(4, day_span - 4)) if rng.random() < 0.5 else None,
    )


def make_people(n: int, days: int, seed: int) -> list[Person]:
    """The organisation's accounts: ``n`` people plus a few service accounts."""
    rng = random.Random(f"scenarios-people:{seed}")
    people: list[Person] = []
    used: set[str] = set()
    n_night = max(1, round(n * 0.04))
    n_light = round(n * 0.2)
    n_heavy = round(n * 0.18)
    tiers = ["light"] * n_light + ["heavy"] * n_heavy + ["mid"] * (n - n_light - n_heavy)
    rng.shuffle(tiers)
    night_ids = set(rng.sample(range(n), min(n, n_night)))
    for i in range(n):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        name = f"{first}.{last}"
        k = 2
        while name in used:
            name, k = f"{first}.{last}{k}", k + 1
        used.add(name)
        home = rng.choices(OFFICES, weights=OFFICE_SIZE)[0]
        offices = [home]
        for _ in range(rng.choices((0, 1, 2), weights=(0.6, 0.3, 0.1))[0]):
            same = [c for c in OFFICES if c.iso2 == home.iso2 and c not in offices]
            other = [c for c in OFFICES if c not in offices]
            offices.append(rng.choice(same if same and rng.random() < 0.6 else other))
        dept = rng.choices(DEPTS, weights=DEPT_W)[0]
        night = i in night_ids
        tier = tiers[i]
        sessions, per = {
            "light": (rng.uniform(0.8, 1.6), rng.uniform(1.3, 2.4)),
            "mid": (rng.uniform(3.2, 5.5), rng.uniform(4.5, 8.0)),
            "heavy": (rng.uniform(5.0, 9.0), rng.uniform(7.0, 12.0)),
        }[tier]
        family = rng.choices(
            ("win", "mac", "linux", "chromeos"),
            weights=(
                0.55,
                0.3,
                0.12 if dept in ("eng", "it") else 0.01,
                0.08 if dept == "support" else 0.01,
            ),
        )[0]
        endpoints = [_endpoint(rng, "laptop", family, rng.randint(100, 99999), days)]
        weights = [1.0]
        if rng.random() < 0.15:
            endpoints.append(_endpoint(rng, "desktop", "win", rng.randint(100, 99999), days))
            weights.append(rng.uniform(0.3, 0.8))
        phone = _endpoint(rng, "phone", "", 0, days)
        if rng.random() < 0.7:
            endpoints.append(phone)
            weights.append(rng.uniform(0.1, 0.5))
        if rng.random() < 0.06:
            endpoints.append(_endpoint(rng, "tablet", "", 0, days))
            weights.append(rng.uniform(0.05, 0.2))
        factor = rng.choices(
            ("duo_push", "passcode", "phone_call", "sms_passcode"), weights=(0.74, 0.1, 0.08, 0.08)
        )[0]
        cc = {"US": "1", "CA": "1", "BR": "55", "IE": "353", "NL": "31", "PL": "48", "IN": "91"}
        cc |= {"SG": "65", "JP": "81", "AU": "61"}
        if factor == "passcode" and rng.random() < 0.6:
            mfa = replace(phone, kind="token", name=f"YubiKey OTP {rng.randint(1000000, 9999999)}")
        else:
            mfa = replace(
                phone, name=f"{phone.name} (+{cc[home.iso2]} XXX-XXX-{rng.randint(0, 9999):04d})"
            )
        leave: set[int] = set()
        if rng.random() < 0.25 and days > 10:
            first_day = rng.randint(0, days - 6)
            leave = set(range(first_day, first_day + rng.randint(2, 5)))
        if night:
            start_h, length_h = rng.uniform(20.0, 22.5), rng.uniform(8.0, 10.0)
        else:
            start_h, length_h = rng.uniform(7.0, 10.0), rng.uniform(7.5, 10.0)
        people.append(
            Person(
                idx=i,
                duo_name=name,
                upn=f"{name}@{DOMAIN}",
                display=f"{first.title()} {last.title()}",
                dept=dept,
                home=home,
                offices=offices,
                remote_p=rng.choice((0.0, 0.2, 0.4, 0.6, 0.9)),
                start_h=start_h,
                length_h=length_h,
                night=night,
                weekday_p=rng.uniform(0.8, 0.98),
                weekend_p=rng.choice((0.0, 0.0, 0.05, 0.15, 0.4)),
                sessions=sessions,
                per_session=per,
                gap_min=rng.uniform(2.0, 14.0),
                evening_p=rng.choice((0.0, 0.0, 0.1, 0.3)) if not night else 0.0,
                endpoints=endpoints,
                endpoint_w=weights,
                mfa=mfa,
                factor=factor,
                remember_p=rng.uniform(0.0, 0.6),
                typo_p=rng.uniform(0.02, 0.1),
                home_ip=_ip(rng),
                leave=leave,
                user_key=_duo_key("DU", f"{seed}:{name}"),
                user_id=_guid(rng),
                groups=[f"grp-{dept}", f"site-{home.name.lower().replace(' ', '-')}"],
            )
        )
    for j, name in enumerate(_SERVICE[: max(1, min(len(_SERVICE), n // 40))]):
        home = OFFICES[j % len(OFFICES)]
        srv = _endpoint(rng, "desktop", "win", 90000 + j, days)
        srv = replace(srv, name=f"HBL-SRV{j:03d}", browser="Chrome", major=121, bump_day=None)
        people.append(
            Person(
                idx=n + j,
                duo_name=name,
                upn=f"{name}@{DOMAIN}",
                display=name,
                dept="it",
                home=home,
                offices=[home],
                remote_p=0.0,
                start_h=0.0,
                length_h=24.0,
                night=True,
                weekday_p=1.0,
                weekend_p=1.0,
                sessions=0,
                per_session=1,
                gap_min=rng.uniform(25, 70),
                evening_p=0.0,
                endpoints=[srv],
                endpoint_w=[1.0],
                mfa=replace(srv, kind="token", name="Duo Mobile Passcode Generator"),
                factor="passcode",
                remember_p=0.9,
                typo_p=0.0,
                home_ip=_ip(rng, _net(f"office:{home.name}", seed)),
                leave=set(),
                service=True,
                user_key=_duo_key("DU", f"{seed}:{name}"),
                user_id=_guid(rng),
                groups=["grp-service"],
            )
        )
    return people


# --------------------------------------------------------------------------------------------
# Abstract sign-in events, rendered per source


@dataclass
class Ev:
    """One sign-in attempt before it is written in a source's format."""

    when: datetime
    user: Person | None
    app: App
    dev: Device
    city: City
    ip: str
    day: int  # local day index (browser version)
    outcome: str = "ok"  # ok, bad_password, push_denied, push_timeout, push_fraud, ghost,
    # not_permitted, mfa_required, kmsi, remembered
    factor: str | None = None
    mfa_city: City | None = None
    ghost: str | None = None  # non-existent account name (local part)
    tag: tuple[str, str, str] | None = None  # ("attack", type, id) or ("benign", kind, "")
    client: str | None = None
    agent: str | None = None  # Entra browser string override (attack tools)
    risk: str = "none"
    mfa: Device | None = None  # the MFA device Duo names (None: the person's usual one)
    no_mfa: bool = False  # rejected before any second factor


_REASON = {
    "push_denied": ("denied", "user_mistake", "MFA denied; user declined the authentication"),
    "push_timeout": ("denied", "no_response", "MFA denied; user did not respond to notification"),
    "push_fraud": ("fraud", "user_marked_fraud", "MFA denied; user reported fraud"),
}
_AZ_STATUS: dict[str, tuple[int, str]] = {
    "bad_password": (50126, "Error validating credentials due to invalid username or password."),
    "ghost": (50034, "The user account does not exist in the directory."),
    "not_permitted": (
        50105,
        "The signed in user is not assigned to a role for the application.",
    ),
    "mfa_required": (50074, "Strong Authentication is required."),
    "kmsi": (50140, "This error occurred due to 'Keep me signed in' interrupt."),
    "push": (500121, "Authentication failed during strong authentication request."),
}


def _duo_browser_version(dev: Device, day: int) -> str:
    major = dev.version(day)
    return {"Safari": f"{major}.3", "Mobile Safari": f"{major}.3"}.get(
        dev.browser, f"{major}.0.{6100 + major}.{(major * 7) % 200}"
    )


def render_duo(ev: Ev, rng: random.Random, seed: int) -> dict[str, Any]:
    """An Admin API v2 authentication-log record."""
    p = ev.user
    factor = ev.factor or (p.factor if p else "duo_push")
    if ev.outcome == "ok":
        result = "success"
        reason = {"passcode": "valid_passcode", "sms_passcode": "valid_passcode"}.get(
            factor, "user_approved"
        )
        if factor == "bypass_code":
            reason = "bypass_user"
    elif ev.outcome == "remembered":
        result, reason, factor = "success", "remembered_device", "remembered_device"
    elif ev.outcome == "bad_password":
        result, reason = "denied", "invalid_passcode"
        factor = "passcode" if factor in ("duo_push", "phone_call") else factor
    elif ev.outcome == "ghost":
        result, reason, factor = "denied", "deny_unenrolled_user", "not_available"
    elif ev.outcome == "not_permitted":
        result, reason, factor = "denied", "user_not_in_permitted_group", "not_available"
    elif ev.outcome in _REASON:
        result, reason, _ = _REASON[ev.outcome]
        factor = "duo_push"
    else:
        raise ValueError(f"outcome {ev.outcome!r} has no Duo form")
    loc = {"city": ev.city.name, "state": ev.city.state, "country": ev.city.country}
    mfa_city = ev.mfa_city or ev.city
    no_mfa = ev.no_mfa or ev.outcome in ("ghost", "not_permitted")
    mfa = ev.mfa or (p.mfa if p else None)
    auth = (
        {"ip": None, "key": None, "location": {}, "name": None}
        if no_mfa or p is None or mfa is None
        else {
            "ip": ev.ip
            if mfa_city == ev.city and ev.dev.kind == "phone"
            else f"{_net(f'carrier:{mfa_city.iso2}:0', seed)}.{p.idx % 248 + 2}",
            "key": _duo_key("DP", f"{seed}:{mfa.name}"),
            "location": {
                "city": mfa_city.name,
                "state": mfa_city.state,
                "country": mfa_city.country,
            },
            "name": mfa.name,
        }
    )
    name = ev.ghost if ev.ghost else (p.duo_name if p else "unknown")
    ts = ev.when
    return {
        "access_device": {
            "browser": ev.dev.browser,
            "browser_version": _duo_browser_version(ev.dev, ev.day),
            "epkey": None,
            "hostname": None,
            "ip": ev.ip,
            "is_encryption_enabled": "unknown",
            "is_firewall_enabled": "unknown",
            "is_password_set": "unknown",
            "location": loc,
            "os": ev.dev.duo_os,
            "os_version": ev.dev.duo_os_version,
            "security_agents": "unknown",
        },
        "alias": "",
        "application": {"key": _duo_key("DI", ev.app.name), "name": ev.app.name},
        "auth_device": auth,
        "email": "" if ev.ghost or p is None else p.upn,
        "event_type": "authentication",
        "factor": factor,
        "isotimestamp": ts.isoformat(timespec="microseconds"),
        "ood_software": None,
        "reason": reason,
        "result": result,
        "timestamp": int(ts.timestamp()),
        "trusted_endpoint_status": "trusted" if ev.dev.managed else "not trusted",
        "txid": _guid(rng),
        "user": {
            "groups": [] if ev.ghost or p is None else list(p.groups),
            "key": "" if ev.ghost or p is None else p.user_key,
            "name": name,
        },
    }


def _az_browser(ev: Ev) -> tuple[str, str]:
    """(browser, clientAppUsed) as Entra reports them."""
    if ev.agent:
        return ev.agent, ev.client or "Browser"
    if ev.client and ev.client != "Browser":
        return "", ev.client
    mobile = ev.dev.kind in ("phone", "tablet")
    if (ev.app.desktop and not mobile) or (mobile and ev.app.mobile_only):
        return f"Rich Client {4 + ev.dev.version(ev.day) % 3}.{ev.dev.version(ev.day)}.0.0", (
            "Mobile Apps and Desktop clients"
        )
    fam = {"Edge Chromium": "Edge", "Chrome Mobile": "Chrome Mobile"}.get(
        ev.dev.browser, ev.dev.browser
    )
    return f"{fam} {ev.dev.version(ev.day)}.0.0", "Browser"


def render_azure(ev: Ev, rng: random.Random, seed: int) -> dict[str, Any]:
    """An Entra ID ``SignInLogs`` record as exported by diagnostic settings."""
    p = ev.user
    code, reason, details = 0, "", "MFA requirement satisfied by claim in the token"
    if ev.outcome in _AZ_STATUS:
        code, reason = _AZ_STATUS[ev.outcome]
        details = {
            "bad_password": "The user didn't enter the right credentials.",
            "ghost": "The account doesn't exist.",
            "mfa_required": "Redirected to external provider for MFA",
            "kmsi": "Keep me signed in prompt",
            "not_permitted": "User is not assigned to the application.",
        }[ev.outcome]
    elif ev.outcome in _REASON:
        code, reason = _AZ_STATUS["push"]
        details = _REASON[ev.outcome][2]
    elif ev.outcome == "ok" and ev.factor == "mfa":
        details = "MFA completed in Azure AD"
    elif ev.outcome not in ("ok", "remembered"):
        raise ValueError(f"outcome {ev.outcome!r} has no Entra form")
    browser, client = _az_browser(ev)
    ts = ev.when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    upn = f"{ev.ghost}@{DOMAIN}" if ev.ghost else (p.upn if p else "")
    known_dev = ev.dev.kind != "attacker"
    status: dict[str, Any] = {"errorCode": code, "additionalDetails": details}
    if code:
        status["failureReason"] = reason
    rid = _guid(rng)
    corr = _guid(rng)
    jitter = rng.uniform(-0.04, 0.04)
    return {
        "time": ts,
        "resourceId": f"/tenants/{TENANT}/providers/Microsoft.aadiam",
        "operationName": "Sign-in activity",
        "operationVersion": "1.0",
        "category": "SignInLogs",
        "tenantId": TENANT,
        "resultType": str(code),
        "resultSignature": "None",
        "resultDescription": reason,
        "durationMs": 0,
        "callerIpAddress": ev.ip,
        "correlationId": corr,
        "identity": p.display if p and not ev.ghost else "",
        "Level": 4 if code == 0 else 3,
        "location": ev.city.iso2,
        "properties": {
            "id": rid,
            "createdDateTime": ts,
            "userDisplayName": p.display if p and not ev.ghost else "",
            "userPrincipalName": upn,
            "userId": "00000000-0000-0000-0000-000000000000"
            if ev.ghost or p is None
            else p.user_id,
            "appId": _stable_guid(ev.app.name),
            "appDisplayName": ev.app.name,
            "ipAddress": ev.ip,
            "status": status,
            "clientAppUsed": client,
            "deviceDetail": {
                "deviceId": ev.dev.device_id if known_dev and ev.dev.managed else "",
                "displayName": ev.dev.name if known_dev and ev.dev.kind != "attacker" else "",
                "operatingSystem": ev.dev.az_os,
                "browser": browser,
                "isCompliant": ev.dev.compliant,
                "isManaged": ev.dev.managed,
                "trustType": ev.dev.trust,
            },
            "location": {
                "city": ev.city.name,
                "state": ev.city.state,
                "countryOrRegion": ev.city.iso2,
                "geoCoordinates": {
                    "latitude": round(ev.city.lat + jitter, 5),
                    "longitude": round(ev.city.lon - jitter, 5),
                },
            },
            "correlationId": corr,
            "conditionalAccessStatus": "notApplied" if code in (50034, 50126) else "success",
            "riskDetail": "none",
            "riskLevelAggregated": ev.risk,
            "riskLevelDuringSignIn": ev.risk,
            "riskState": "none" if ev.risk == "none" else "atRisk",
            "isInteractive": True,
            "authenticationRequirement": "multiFactorAuthentication"
            if p and not p.service
            else "singleFactorAuthentication",
            "userType": "Member",
            "resourceDisplayName": ev.app.name,
        },
    }


RENDER = {"duo": render_duo, "azure": render_azure}


# --------------------------------------------------------------------------------------------
# Simulation


def _poisson(rng: random.Random, lam: float) -> int:
    """Poisson draw by inversion (small means)."""
    if lam <= 0:
        return 0
    limit, k, prod = math.exp(-lam), 0, rng.random()
    while prod > limit:
        k += 1
        prod *= rng.random()
    return k


def _geometric(rng: random.Random, mean: float) -> int:
    """1, 2, ... with the given mean."""
    if mean <= 1:
        return 1
    q = 1.0 - 1.0 / mean
    return 1 + int(math.log(1.0 - rng.random()) / math.log(q))


def _utc(start: date, day: int, local_h: float, tz: float) -> datetime:
    base = datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=day)
    return base + timedelta(hours=local_h - tz)


@dataclass
class DayPlan:
    """Drift applied to one person on one local day (scored days only)."""

    kind: str
    city: City | None = None
    device: Device | None = None
    app: App | None = None


class Sim:
    """Per-source simulation state: people's app habits, events, labels."""

    def __init__(
        self,
        people: list[Person],
        source: str,
        *,
        days: int,
        score_days: int,
        start: date,
        seed: int,
        min_incidents: int,
    ) -> None:
        self.people = [p for p in people]
        self.source = source
        self.days = days
        self.score_days = score_days
        self.start = start
        self.seed = seed
        self.min_incidents = min_incidents
        self.rng = random.Random(f"scenarios:{seed}:{source}")
        self.t0 = datetime(start.year, start.month, start.day, tzinfo=UTC)
        self.split = self.t0 + timedelta(days=days)
        self.end = self.split + timedelta(days=score_days)
        self.events: list[Ev] = []
        self.apps: dict[int, tuple[list[App], list[float]]] = {}
        self.plans: dict[int, dict[int, DayPlan]] = {}
        self.n_incidents: Counter[str] = Counter()
        for p in self.people:
            self.apps[p.idx] = self._habits(p)

    # habits ---------------------------------------------------------------------------------

    def _habits(self, p: Person) -> tuple[list[App], list[float]]:
        rng = self.rng
        cat = CATALOG[self.source]
        if p.service:
            apps = [rng.choice([a for a in cat if not a.mobile and not a.depts])]
            return apps, [1.0]
        chosen = [
            a
            for a in cat
            if (not a.depts and rng.random() < 0.65) or (p.dept in a.depts and rng.random() < 0.85)
        ]
        if len(chosen) < 2:
            chosen += rng.sample([a for a in cat if a not in chosen and not a.depts], 2)
        rng.shuffle(chosen)
        s = rng.uniform(0.7, 1.6)
        weights = [1.0 / (r + 1) ** s for r in range(len(chosen))]
        if p.dept == "it" and rng.random() < 0.7:
            admin = [a for a in SENSITIVE[self.source] if "it" in a.depts]
            for a in rng.sample(admin, rng.randint(1, min(3, len(admin)))):
                chosen.append(a)
                weights.append(rng.uniform(0.02, 0.12))
        return chosen, weights

    # placement ------------------------------------------------------------------------------

    def _is_scored(self, when: datetime) -> bool:
        return self.split <= when < self.end

    def _scored_days(self, p: Person, tz: float | None = None) -> list[int]:
        """Local day indexes whose working-time midpoint falls in the scored window."""
        tz = p.tz if tz is None else tz
        mid = p.start_h + p.length_h / 2
        return [
            d
            for d in range(self.days - 1, self.days + self.score_days + 1)
            if self._is_scored(_utc(self.start, d, mid, tz))
        ]

    def _office_ip(self, city: City) -> str:
        return _ip(self.rng, _net(f"office:{city.name}", self.seed))

    def _carrier_ip(self, city: City) -> str:
        return _ip(self.rng, _net(f"carrier:{city.iso2}:{self.rng.randint(0, 3)}", self.seed))

    def _pick_app(self, p: Person, dev: Device) -> App:
        apps, weights = self.apps[p.idx]
        if dev.kind in ("phone", "tablet"):
            mob = [(a, w) for a, w in zip(apps, weights, strict=True) if a.mobile]
            if mob:
                return self.rng.choices([a for a, _ in mob], weights=[w for _, w in mob])[0]
        desk = [(a, w) for a, w in zip(apps, weights, strict=True) if not a.mobile_only]
        return self.rng.choices([a for a, _ in desk], weights=[w for _, w in desk])[0]

    # ordinary days ----------------------------------------------------------------------------

    def simulate_person(self, p: Person) -> None:
        """All of one person's benign events (history and scored days, drift included)."""
        plans = self.plans.get(p.idx, {})
        if p.service:
            self._service(p)
            return
        travel = [d for d, pl in plans.items() if pl.kind == "travel"]
        first_trip = min(travel) if travel else None
        for d in range(-1, self.days + self.score_days + 1):
            plan = plans.get(d)
            if first_trip is not None and d >= first_trip - 1 and plan is None:
                continue  # flight day, and no home days once the trip has started
            self._day(p, d, plan)

    def _service(self, p: Person) -> None:
        rng = self.rng
        app, _ = self.apps[p.idx]
        t = self.t0 + timedelta(minutes=rng.uniform(0, 60))
        while t < self.end:
            out = "remembered" if rng.random() < 0.9 else "ok"
            self.events.append(
                Ev(t, p, app[0], p.laptop, p.home, p.home_ip, 0, out, factor="passcode")
            )
            t += timedelta(minutes=max(5.0, rng.gauss(p.gap_min, p.gap_min / 6)))

    def _day(self, p: Person, d: int, plan: DayPlan | None) -> None:
        rng = self.rng
        local = self.start + timedelta(days=d)
        weekday = local.weekday() < 5
        if d in p.leave:
            return
        if not plan and rng.random() >= (p.weekday_p if weekday else p.weekend_p):
            return
        if plan and not weekday and rng.random() >= 0.5:
            return
        tz = p.tz
        # where: office or home, and the day's drift
        city, ip = p.home, p.home_ip
        endpoints, weights = list(p.endpoints), list(p.endpoint_w)
        mfa = p.mfa
        kind = plan.kind if plan else ""
        remote = rng.random() < p.remote_p or not weekday
        if not remote:
            city = rng.choices(p.offices, weights=[4] + [1] * (len(p.offices) - 1))[0]
            ip = self._office_ip(city)
            tz = city.utc
        travelling = kind == "travel" and plan is not None and plan.city is not None
        if travelling and plan and plan.city:
            city, tz = plan.city, plan.city.utc
            ip = _ip(rng, _net(f"hotel:{city.name}:{p.idx}", self.seed))
        new_dev = plan.device if plan and kind == "new_laptop" else None
        if new_dev is not None:
            if new_dev.kind == "phone":
                mfa = replace(new_dev, name=f"{new_dev.name} (+XX XXX-XXX-{p.idx:04d})")
                idx = next((i for i, e in enumerate(endpoints) if e.kind == "phone"), None)
                if idx is not None:
                    endpoints[idx] = new_dev
            else:
                endpoints[0] = new_dev
        lam = rng.gammavariate(2.0, p.sessions / 2.0) * (1.0 if weekday else 0.4)
        n_sessions = max(1, _poisson(rng, lam))
        starts = []
        for _ in range(n_sessions):
            if rng.random() < 0.6:
                h = p.start_h + rng.betavariate(2, 2) * p.length_h * 0.5
            else:
                h = p.start_h + p.length_h * (0.55 + rng.betavariate(2, 2) * 0.45)
            starts.append(h)
        if rng.random() < p.evening_p:
            starts.append(rng.uniform(19.5, 22.0))
        if plan and plan.kind == "late_work":
            if rng.random() < 0.6:
                late = min(23.5, p.start_h + p.length_h + rng.uniform(1.5, 3.5))
            else:
                late = max(5.5, p.start_h - rng.uniform(1.5, 2.5))
            starts.append(-late)  # negative: marked late session
        first_on: set[str] = set()
        for h0 in sorted(starts, key=abs):
            late_session = h0 < 0
            h = abs(h0)
            evening = not late_session and h >= 19.5 and h > p.start_h + p.length_h
            if evening:
                dev = next((e for e in endpoints if e.kind == "phone"), endpoints[0])
            elif late_session:
                dev = endpoints[0]
            else:
                dev = rng.choices(endpoints, weights=weights)[0]
            mobile = dev.kind in ("phone", "tablet")
            s_city, s_ip, s_tz = city, ip, tz
            s_tag: tuple[str, str, str] | None = None
            if travelling:
                s_tag = ("benign", "travel", "")
            elif evening or late_session:
                s_city, s_tz = p.home, p.tz
                s_ip = self._carrier_ip(p.home) if mobile else p.home_ip
            elif mobile and remote:
                s_city, s_ip = p.home, self._carrier_ip(p.home)
            if kind == "vpn_egress" and plan and plan.city and not mobile and not travelling:
                s_city, s_tag = plan.city, ("benign", "vpn_egress", "")
                s_ip = _ip(rng, _net(f"vpn:{plan.city.name}", self.seed))
            if late_session and s_tag is None:
                s_tag = ("benign", "late_work", "")
            n = _geometric(rng, p.per_session if not evening else 1.5)
            t = _utc(self.start, d, h, s_tz)
            for k in range(n):
                app = self._pick_app(p, dev)
                e_tag = s_tag
                if kind == "new_app" and plan and plan.app and not evening and rng.random() < 0.3:
                    if not (mobile and not plan.app.mobile):
                        app, e_tag = plan.app, e_tag or ("benign", "new_app", "")
                if new_dev is not None and e_tag is None:
                    if dev is new_dev or (new_dev.kind == "phone" and self.source == "duo"):
                        e_tag = ("benign", "new_laptop", "")
                first = dev.name not in first_on
                self._attempt(p, t, app, dev, s_city, s_ip, d, e_tag, first, mfa, k == 0)
                first_on.add(dev.name)
                t += timedelta(minutes=rng.expovariate(1.0 / p.gap_min) + 0.2)

    def _attempt(
        self,
        p: Person,
        t: datetime,
        app: App,
        dev: Device,
        city: City,
        ip: str,
        d: int,
        tag: tuple[str, str, str] | None,
        first: bool,
        mfa: Device | None = None,
        opening: bool = True,
    ) -> None:
        """One benign sign-in, with the source's MFA noise and an occasional typo before it."""
        rng = self.rng
        mfa_city = p.home if city.iso2 == p.home.iso2 else city
        base = Ev(t, p, app, dev, city, ip, d, tag=tag, mfa_city=mfa_city, mfa=mfa)
        if app.sensitive is False and rng.random() < 0.004:
            self.events.append(replace(base, outcome="not_permitted"))
            base.when = t + timedelta(seconds=rng.uniform(20, 90))
            base.app = self._pick_app(p, dev)
        if rng.random() < (p.typo_p if opening else p.typo_p / 10):
            typo_tag = tag or ("benign", "typo", "")
            n_bad = rng.choice((1, 1, 2))
            kind = rng.choices(("bad_password", "push_denied", "push_timeout"), weights=(6, 2, 2))[
                0
            ]
            for j in range(n_bad):
                when = t + timedelta(seconds=j * rng.uniform(8, 40))
                self.events.append(replace(base, when=when, outcome=kind, tag=typo_tag))
            when = t + timedelta(seconds=n_bad * 45 + rng.uniform(5, 60))
            base = replace(base, when=when, tag=typo_tag)
        elif rng.random() < 0.003:  # a push nobody answered, no retry
            self.events.append(replace(base, outcome="push_timeout"))
            return
        if self.source == "azure":
            if first and rng.random() < 0.55:
                self.events.append(replace(base, outcome="mfa_required"))
                when = base.when + timedelta(seconds=rng.uniform(8, 50))
                base = replace(base, when=when, factor="mfa")
            elif rng.random() < 0.02:
                self.events.append(replace(base, outcome="kmsi"))
                base = replace(base, when=base.when + timedelta(seconds=rng.uniform(2, 10)))
        elif not first and rng.random() < p.remember_p:
            base.outcome = "remembered"
        self.events.append(base)

    # drift -------------------------------------------------------------------------------------

    def plan_drift(self, pool: list[Person]) -> list[Person]:
        """Assign drift kinds to some people on scored days; returns the people not used."""
        rng = self.rng
        n = len([p for p in self.people if not p.service])
        counts = {
            "travel": max(1, round(n * 0.05)),
            "new_laptop": max(1, round(n * 0.05)),
            "new_app": max(1, round(n * 0.06)),
            "late_work": max(1, round(n * 0.06)),
            "vpn_egress": max(1, round(n * 0.04)),
        }
        free = list(pool)
        rng.shuffle(free)
        for kind, k in counts.items():
            for _ in range(k):
                cand = [p for p in free if not (kind == "late_work" and p.night)]
                if kind == "vpn_egress":
                    cand = [p for p in cand if any(h.iso2 == p.home.iso2 for h in VPN_HUBS)]
                if not cand:
                    break
                p = cand[0]
                free.remove(p)
                self._plan(p, kind)
        return free

    def _plan(self, p: Person, kind: str) -> None:
        rng = self.rng
        plans: dict[int, DayPlan] = {}
        if kind == "travel":
            seen = {c.iso2 for c in p.offices}
            dests = [c for c in (*TRIPS, *OFFICES) if c.iso2 not in seen]
            dest = rng.choice(dests)
            for d in self._scored_days(p, dest.utc):
                plans[d] = DayPlan("travel", city=dest)
        elif kind == "vpn_egress":
            hub = rng.choice([h for h in VPN_HUBS if h.iso2 == p.home.iso2])
            for d in rng.sample(self._scored_days(p), 1):
                plans[d] = DayPlan("vpn_egress", city=hub)
        elif kind == "new_laptop":
            if rng.random() < 0.7:
                old = p.laptop
                family = rng.choices(("win", "mac"), weights=(0.6, 0.4))[0]
                dev = _endpoint(rng, "laptop", family, rng.randint(100, 99999), 0)
                dev.bump_day = None
                if dev.duo_os == old.duo_os:
                    newer = {"Windows": "11", "Mac OS X": "14.4.1"}.get(
                        old.duo_os, old.duo_os_version
                    )
                    dev.duo_os_version = newer
                    dev.major = old.version(self.days) + 1
            else:
                dev = _endpoint(rng, "phone", "", 0, 0)
                dev.bump_day = None
                if self.source == "azure" and not any(e.kind == "phone" for e in p.endpoints):
                    dev = replace(p.laptop, name=f"HBL-L{rng.randint(100, 99999):05d}")
                    dev.device_id, dev.bump_day = _guid(rng), None
                    dev.major = p.laptop.version(self.days) + 1
            for d in self._scored_days(p):
                plans[d] = DayPlan("new_laptop", device=dev)
        elif kind == "new_app":
            mine = set(a.name for a in self.apps[p.idx][0])
            new = [a for a in CATALOG[self.source] if a.name not in mine and not a.mobile_only]
            if not new:
                return
            app = rng.choice(new)
            for d in self._scored_days(p):
                plans[d] = DayPlan("new_app", app=app)
        elif kind == "late_work":
            for d in rng.sample(self._scored_days(p), 1):
                plans[d] = DayPlan("late_work")
        self.plans[p.idx] = plans

    def enforce_flights(self) -> None:
        """Drop travel events a plane could not have reached since the last login at home."""
        by_user: dict[int, list[Ev]] = {}
        for e in self.events:
            if e.user is not None:
                by_user.setdefault(e.user.idx, []).append(e)
        drop: set[int] = set()
        for idx, plans in self.plans.items():
            if not any(pl.kind == "travel" for pl in plans.values()):
                continue
            evs = sorted(by_user.get(idx, []), key=lambda e: e.when)
            home = [e for e in evs if e.tag is None or e.tag[1] != "travel"]
            trip = [e for e in evs if e.tag is not None and e.tag[1] == "travel"]
            if not trip:
                continue
            for e in trip:
                before = [h for h in home if h.when <= e.when]
                if e.when < self.split:
                    drop.add(id(e))
                elif before:
                    last = before[-1]
                    need = timedelta(hours=km(last.city, e.city) / 800.0 + 3.0)
                    if e.when - last.when < need:
                        drop.add(id(e))
        if drop:
            self.events = [e for e in self.events if id(e) not in drop]
        # other drift that would fall in the history is dropped too (it starts on scored days)
        self.events = [
            e
            for e in self.events
            if not (
                e.tag is not None
                and e.tag[0] == "benign"
                and e.tag[1] in ("new_laptop", "new_app", "vpn_egress", "late_work")
                and e.when < self.split
            )
        ]

    # attacks -----------------------------------------------------------------------------------

    def _n(self, lo: int, hi: int) -> int:
        n = len([p for p in self.people if not p.service])
        return max(self.min_incidents, round(self.rng.randint(lo, hi) * n / 120))

    def _at_local(self, tz: float, local_h: float, span_min: float = 0.0) -> datetime:
        """A time in the scored window at ``local_h`` local time (shifted to fit ``span_min``)."""
        k = self.rng.randrange(self.score_days)
        t = self.split + timedelta(days=k, hours=(local_h - tz) % 24)
        if t + timedelta(minutes=span_min) >= self.end:
            t -= timedelta(days=1)
            if t < self.split:
                t = self.end - timedelta(minutes=span_min + 1)
        return t

    def _attacker_device(self, victim: Person | None) -> Device:
        rng = self.rng
        used = {(d.duo_os, d.browser) for d in (victim.endpoints if victim else [])}
        options = [
            ("Windows", "10", "Firefox", "Windows10"),
            ("Linux", "", "Chrome", "Linux"),
            ("Windows", "10", "Chrome", "Windows10"),
            ("Mac OS X", "10.15.7", "Chrome", "MacOs"),
            ("Android", "10", "Chrome Mobile", "Android"),
            ("Windows", "7", "Edge Chromium", "Windows7"),
        ]
        fresh = [o for o in options if (o[0], o[2]) not in used] or options
        os_, ver, browser, az = rng.choice(fresh)
        major = _BROWSER_MAJOR[browser] - rng.randint(0, 12)
        return Device("attacker", os_, ver, browser, major, az, "", _guid(rng), "", False, False)

    def _victim_city(self, p: Person) -> City:
        return p.home

    def _label(self, evs: list[Ev], atype: str) -> None:
        self.n_incidents[atype] += 1
        aid = f"{self.source}-{atype}-{self.n_incidents[atype]:02d}"
        for e in evs:
            e.tag = ("attack", atype, aid)
        self.events.extend(evs)

    def plan_attacks(self, pool: list[Person]) -> None:
        """Inject the six attack types; victims come from ``pool`` (people with no drift)."""
        rng = self.rng
        victims = list(pool)
        rng.shuffle(victims)

        def take(ok: Any = None) -> Person:
            for p in victims:
                if ok is None or ok(p):
                    victims.remove(p)
                    return p
            cand = [p for p in self.people if not p.service and (ok is None or ok(p))]
            return rng.choice(cand or [p for p in self.people if not p.service])

        for _ in range(self._n(3, 7)):
            self._account_takeover(take())
        for _ in range(self._n(3, 7)):
            self._mfa_fatigue(take(lambda p: p.factor != "passcode" or p.mfa.kind != "token"))
        for _ in range(self._n(3, 7)):
            self._impossible_travel(take(lambda p: self._home_logins(p)))
        for _ in range(self._n(3, 7)):
            self._sensitive_night(take(lambda p: p.dept != "it" and not p.night))
        for _ in range(self._n(3, 7)):
            self._off_hours(take(lambda p: not p.night and p.start_h >= 7 and p.evening_p == 0))
        for _ in range(self._n(3, 6)):
            self._spray()

    def _home_logins(self, p: Person) -> list[Ev]:
        return [
            e
            for e in self._scored_events.get(p.idx, [])
            if e.user is p
            and e.tag is None
            and e.outcome in ("ok", "remembered")
            and self.split <= e.when < self.end - timedelta(hours=2.1)
            and e.city.iso2 == p.home.iso2
        ]

    def _mfa_ok(self, p: Person) -> str:
        return p.factor if p.factor != "phone_call" or self.rng.random() < 0.5 else "duo_push"

    def _account_takeover(self, v: Person) -> None:
        rng = self.rng
        seen = {c.iso2 for c in v.offices} | {v.home.iso2}
        city = rng.choice([c for c in ATTACKER_CITIES if c.iso2 not in seen])
        dev = self._attacker_device(v)
        ip = _ip(rng)
        t = self._at_local(city.utc, rng.uniform(8, 23), 120)
        apps, weights = self.apps[v.idx]
        evs: list[Ev] = []
        mk = dict(user=v, dev=dev, city=city, ip=ip, day=self.days, mfa_city=v.home)
        for _ in range(rng.choice((0, 0, 1, 2))):
            evs.append(Ev(t, app=rng.choices(apps, weights)[0], outcome="bad_password", **mk))
            t += timedelta(seconds=rng.uniform(20, 200))
        first = rng.choices(apps, weights)[0]
        if self.source == "azure":
            evs.append(Ev(t, app=first, outcome="mfa_required", **mk))
            t += timedelta(seconds=rng.uniform(10, 40))
        risk = rng.choice(("none", "low", "medium", "high"))
        evs.append(Ev(t, app=first, factor=self._mfa_ok(v), risk=risk, **mk))
        for _ in range(rng.randint(1, 5)):
            t += timedelta(minutes=rng.uniform(1, 25))
            evs.append(Ev(t, app=rng.choice(apps), outcome="remembered", risk=risk, **mk))
        self._label(evs, "account_takeover")

    def _mfa_fatigue(self, v: Person) -> None:
        rng = self.rng
        if rng.random() < 0.25:
            city = next((c for c in ATTACKER_CITIES if c.iso2 == v.home.iso2), None) or rng.choice(
                ATTACKER_CITIES
            )
        else:
            city = rng.choice([c for c in ATTACKER_CITIES if c.iso2 != v.home.iso2])
        dev = self._attacker_device(v)
        ip = _ip(rng)
        local_h = rng.uniform(18, 24) if rng.random() < 0.5 else rng.uniform(0, 24)
        n = rng.randint(5, 30)
        span = rng.uniform(2, 15)
        t = self._at_local(v.tz, local_h, span + 30)
        apps, weights = self.apps[v.idx]
        app = rng.choices(apps, weights)[0]
        mk = dict(user=v, dev=dev, city=city, ip=ip, day=self.days, mfa_city=v.home)
        evs: list[Ev] = []
        fraud_left = 1
        for _ in range(n):
            r = rng.random()
            out = "push_timeout" if r < 0.55 else "push_denied"
            if r > 0.96 and fraud_left:
                out, fraud_left = "push_fraud", 0
            evs.append(Ev(t, app=app, outcome=out, factor="duo_push", **mk))
            t += timedelta(minutes=span / n * rng.uniform(0.5, 1.5))
        if rng.random() < 0.5:
            evs.append(Ev(t, app=app, factor="duo_push", risk=rng.choice(("none", "medium")), **mk))
            for _ in range(rng.randint(0, 2)):
                t += timedelta(minutes=rng.uniform(1, 10))
                evs.append(Ev(t, app=rng.choice(apps), outcome="remembered", **mk))
        self._label(evs, "mfa_fatigue")

    def _impossible_travel(self, v: Person) -> None:
        rng = self.rng
        real = self._home_logins(v)
        if not real:  # nobody logged in at home on the scored days: nothing to replay
            return
        anchor = rng.choice(real)
        far = [c for c in ATTACKER_CITIES if c.iso2 != v.home.iso2 and km(c, v.home) > 5000]
        city = rng.choice(far or list(ATTACKER_CITIES))
        t = anchor.when + timedelta(minutes=rng.uniform(60, 120))
        ip = _ip(rng)
        apps, weights = self.apps[v.idx]
        evs = []
        for _ in range(rng.randint(1, 4)):
            evs.append(
                Ev(
                    t,
                    v,
                    rng.choices(apps, weights)[0],
                    anchor.dev,
                    city,
                    ip,
                    anchor.day,
                    outcome="remembered",
                    mfa_city=v.home,
                )
            )
            t += timedelta(minutes=rng.uniform(1, 10))
        self._label(evs, "impossible_travel")

    def _sensitive_night(self, v: Person) -> None:
        rng = self.rng
        mine = {a.name for a in self.apps[v.idx][0]}
        app = rng.choice([a for a in SENSITIVE[self.source] if a.name not in mine])
        t = self._at_local(v.tz, rng.uniform(0.0, 4.6), 30)
        mk = dict(user=v, dev=v.laptop, city=v.home, ip=v.home_ip, day=self.days, mfa_city=v.home)
        evs = []
        if rng.random() < 0.3:
            evs.append(Ev(t, app=app, outcome="not_permitted", **mk))
            t += timedelta(seconds=rng.uniform(30, 200))
        if self.source == "azure" and rng.random() < 0.5:
            evs.append(Ev(t, app=app, outcome="mfa_required", **mk))
            t += timedelta(seconds=rng.uniform(10, 40))
        for k in range(rng.randint(1, 3)):
            evs.append(Ev(t, app=app, factor=self._mfa_ok(v) if k == 0 else None, **mk))
            t += timedelta(minutes=rng.uniform(2, 12))
        self._label(evs, "sensitive_app_night")

    def _off_hours(self, v: Person, as_type: str = "off_hours") -> None:
        rng = self.rng
        apps, weights = self.apps[v.idx]
        app = apps[max(range(len(apps)), key=lambda i: weights[i])]
        t = self._at_local(v.tz, rng.uniform(2.0, 3.9), 40)
        evs = []
        for k in range(rng.randint(1, 4)):
            evs.append(
                Ev(
                    t,
                    v,
                    app if k == 0 or rng.random() < 0.6 else rng.choice(apps),
                    v.laptop,
                    v.home,
                    v.home_ip,
                    self.days,
                    outcome="ok" if k == 0 else "remembered",
                    mfa_city=v.home,
                )
            )
            t += timedelta(minutes=rng.uniform(1, 12))
        self._label(evs, as_type)

    def _spray(self) -> None:
        rng = self.rng
        real = [p for p in self.people if not p.service]
        n = rng.randint(15, 40)
        n_ghost = min(rng.randint(3, 8), n - 1)
        names = {p.duo_name for p in self.people}
        ghosts = [g for g in rng.sample(_GHOSTS, len(_GHOSTS)) if g not in names][:n_ghost]
        targets: list[Person | str] = [*rng.sample(real, min(len(real), n - len(ghosts))), *ghosts]
        rng.shuffle(targets)
        city = rng.choice(ATTACKER_CITIES)
        ip = _ip(rng)
        dev = self._attacker_device(None)
        app = rng.choice([a for a in CATALOG[self.source] if not a.depts])
        client = rng.choice(("Browser", "Authenticated SMTP", "Other clients", "IMAP4"))
        agent = rng.choice(("Python Requests 2.31", "Go-http-client 1.1", "")) or None
        step = rng.uniform(10, 90)
        t = self._at_local(city.utc, rng.uniform(0, 24), len(targets) * 2 * step / 60 + 5)
        evs: list[Ev] = []
        people = [x for x in targets if isinstance(x, Person)]
        winner = rng.choice(people) if people and rng.random() < 0.5 else None
        for tg in targets:
            for _ in range(rng.choice((1, 1, 2))):
                if isinstance(tg, Person):
                    ev = Ev(t, tg, app, dev, city, ip, self.days, "bad_password", "passcode")
                    ev.no_mfa = True
                else:
                    ev = Ev(t, None, app, dev, city, ip, self.days, outcome="ghost", ghost=tg)
                ev.client, ev.agent = client, agent
                evs.append(ev)
                t += timedelta(seconds=step * rng.uniform(0.5, 1.5))
            if tg is winner:
                ev = Ev(t, tg, app, dev, city, ip, self.days, factor="bypass_code", risk="medium")
                ev.no_mfa = True
                ev.client, ev.agent = client, agent
                evs.append(ev)
                winner = None
                t += timedelta(seconds=step)
        self._label(evs, "password_spray")

    # run ---------------------------------------------------------------------------------------

    def run(self) -> None:
        """Plan drift, simulate everyone, then inject attacks."""
        humans = [p for p in self.people if not p.service]
        free = self.plan_drift(humans)
        for p in self.people:
            self.simulate_person(p)
        self.enforce_flights()
        self.events = [e for e in self.events if self.t0 <= e.when < self.end]
        self._scored_events: dict[int, list[Ev]] = {}
        for e in self.events:
            if e.user is not None and e.when >= self.split:
                self._scored_events.setdefault(e.user.idx, []).append(e)
        self.plan_attacks(free)
        self.events.sort(key=lambda e: (e.when, e.user.idx if e.user else -1))


# --------------------------------------------------------------------------------------------
# Writing


def _username(source: str, ev: Ev) -> str:
    if ev.ghost:
        return ev.ghost if source == "duo" else f"{ev.ghost}@{DOMAIN}"
    assert ev.user is not None
    return ev.user.duo_name if source == "duo" else ev.user.upn


def batch_name(source: str, when: datetime) -> str:
    """``DUO_2023-04-05T00_03_11.250Z.json``: prefix and the first event's UTC time."""
    return f"{PREFIX[source]}_{when.astimezone(UTC).strftime('%Y-%m-%dT%H_%M_%S.%f')[:-3]}Z.json"


def _write_batches(
    source: str, items: list[tuple[Ev, dict[str, Any]]], folder: Path, hours: float
) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{PREFIX[source]}_*.json"):
        old.unlink()
    width = timedelta(hours=hours)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    chunks: dict[int, list[tuple[Ev, dict[str, Any]]]] = {}
    for ev, rec in items:
        chunks.setdefault((ev.when - epoch) // width, []).append((ev, rec))
    for chunk in chunks.values():
        path = folder / batch_name(source, chunk[0][0].when)
        path.write_text(json.dumps([r for _, r in chunk]), encoding="utf-8")
    return len(chunks)


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        w.writerows(rows)


def generate(
    out: Path,
    *,
    source: str = "both",
    users: int = 120,
    days: int = 30,
    score_days: int = 2,
    seed: int = 0,
    start: date = DEFAULT_START,
    min_incidents: int = 1,
    file_hours: float = 8.0,
) -> dict[str, Any]:
    """Write the scenario set under ``out``; return per-source counts.

    ``days`` history days (training data, benign only) are followed by ``score_days`` scored
    days (inference data, benign + attacks). ``min_incidents`` is the least number of incidents
    per attack type (at 120 users there are 3-7 anyway).
    """
    if source not in ("duo", "azure", "both"):
        raise ValueError(f"source must be duo, azure or both, got {source!r}")
    if users < 1 or days < 1 or score_days < 1:
        raise ValueError("users, days and score_days must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    people = make_people(users, days, seed)
    summary: dict[str, Any] = {}
    for src in ("duo", "azure") if source == "both" else (source,):
        sim = Sim(
            [replace(p) for p in people],
            src,
            days=days,
            score_days=score_days,
            start=start,
            seed=seed,
            min_incidents=min_incidents,
        )
        sim.run()
        rrng = random.Random(f"scenarios-render:{seed}:{src}")
        render = RENDER[src]
        train: list[tuple[Ev, dict[str, Any]]] = []
        infer: list[tuple[Ev, dict[str, Any]]] = []
        labels: list[dict[str, Any]] = []
        benign: list[dict[str, Any]] = []
        for ev in sim.events:
            rec = render(ev, rrng, seed)
            scored = ev.when >= sim.split
            (infer if scored else train).append((ev, rec))
            if ev.tag is None or not scored:
                continue
            eid = _event_id(rec)
            if ev.tag[0] == "attack":
                labels.append(
                    {
                        "event_id": eid,
                        "source": src,
                        "username": _username(src, ev),
                        "attack_id": ev.tag[2],
                        "attack_type": ev.tag[1],
                        "time": ev.when.isoformat(),
                    }
                )
            else:
                benign.append({"event_id": eid, "username": _username(src, ev), "kind": ev.tag[1]})
        n_train = _write_batches(src, train, out / f"{src}-training-data", file_hours)
        n_infer = _write_batches(src, infer, out / f"{src}-inference-data", file_hours)
        _write_csv(out / f"labels_{src}.csv", LABEL_COLUMNS, labels)
        _write_csv(out / f"benign_{src}.csv", BENIGN_COLUMNS, benign)
        incidents = {r["attack_id"]: r for r in labels}
        per_user = Counter(_username(src, e) for e, _ in train if e.tag is None and e.user)
        summary[src] = {
            "training_records": len(train),
            "inference_records": len(infer),
            "files": n_train + n_infer,
            "users": len({_username(src, e) for e, _ in train + infer}),
            "light_users": sum(1 for v in per_user.values() if v < 300),
            "attack_events": dict(Counter(r["attack_type"] for r in labels)),
            "incidents": dict(Counter(r["attack_type"] for r in incidents.values())),
            "benign_events": dict(Counter(r["kind"] for r in benign)),
        }
        log.info(
            "%s: %d training and %d inference records, %d attack events, %d drift events -> %s",
            src,
            len(train),
            len(infer),
            len(labels),
            len(benign),
            out,
        )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(
        prog="python -m secml.dfp.scenarios",
        description="Independent DFP scenario set: Duo / Entra ID sign-ins with drift and attacks.",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--source", choices=("duo", "azure", "both"), default="both")
    p.add_argument("--users", type=int, default=120)
    p.add_argument("--days", type=int, default=30, help="history days (training data)")
    p.add_argument("--score-days", type=int, default=2, help="scored days (inference data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START, help="first day")
    p.add_argument("--min-incidents", type=int, default=1, help="least incidents per attack type")
    p.add_argument("--file-hours", type=float, default=8.0, help="hours per batch file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    summary = generate(
        args.out,
        source=args.source,
        users=args.users,
        days=args.days,
        score_days=args.score_days,
        seed=args.seed,
        start=args.start,
        min_incidents=args.min_incidents,
        file_hours=args.file_hours,
    )
    for src, s in summary.items():
        log.info("%s summary: %s", src, json.dumps(s, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
