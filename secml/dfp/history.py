"""One per-user state that turns a login into features relative to that user's own history.

Batch training, batch inference, streaming and ``POST /predict`` all call :func:`featurize`
with the same :class:`UserState` objects, so a login scores the same whether it is sent alone
or inside the day's batch: what matters is the state before it, not the request it came in.
The state is updated by every featurized event; the gateway keeps it in the detections store
(``secml.store.DetectionStore.load_user_states`` / ``save_user_states``) so it survives restarts.

Features (computed before the event is added to the state):

- Morpheus's ``logcount``, ``locincrement`` and ``appincrement``: running count of the
  user's events, distinct locations and distinct apps on the event's UTC day.
- ``hour_rarity``: ``-log10`` of the smoothed share of the user's past logins within an hour
  of this one, on the local solar clock of the login's country (UTC + longitude / 15), so a
  business trip keeps the user's working hours and 03:00 local stands out.
- ``hour_gap``: hours from this login's local hour to the nearest hour where the user has at
  least 2% of their logins (03:00 is far from a 09-18 habit; 20:00 is near).
- ``new_country``, ``new_device``, ``new_browser_os``, ``new_app``: 1 when the user never used
  that value, or first used it less than a day ago (so a whole attack session stays new; every
  value is new for a user with no history).
- ``fails_recent``, ``events_recent``: the user's failed and total logins in the last
  ``RECENT_S`` seconds, this one included (MFA push bombing, password guessing).
- ``log_speed``: ``log10(1 + km/h)``, the fastest travel this login implies from any of the
  user's logins in the last 12 hours, when it comes from a country new to the user (country
  centroids from ``secml.dfp.geo``; travel inside a country, or back to one of the user's
  countries, is 0).
- ``history_depth``: ``log10(1 + events seen)``, how much the other features can be trusted.

Only successful logins teach the state where, when and with what the user logs in; failed
ones count as recent activity only, so an attacker's failed attempts do not become habits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from secml.dfp.geo import centroid, haversine_km

RECENT_S = 600.0
# Logins within this many seconds are kept for the travel-speed check.
TRAVEL_WINDOW_S = 12 * 3600.0
MAX_TRAVEL_POINTS = 64
# A value stays "new" for this long after the user first used it (the whole attack session).
ESTABLISHED_S = 24 * 3600.0
# Below this many hours between logins the speed uses this floor (clock skew, batching).
MIN_TRAVEL_H = 0.25
# An hour of the day is one of the user's active hours when it holds this share of logins.
ACTIVE_SHARE = 0.02
MAX_VALUES = 256
NOVELTY = ("new_country", "new_device", "new_browser_os", "new_app")
# Model inputs; ``history_depth`` grows without bound, so it is a risk input, not a model one.
HISTORY_NUMERIC = ("hour_rarity", "hour_gap", "fails_recent", "events_recent", "log_speed")
HISTORY_BINARY = NOVELTY
HISTORY_FEATURES = (*HISTORY_NUMERIC, "history_depth", *HISTORY_BINARY)

# Source columns (after ``schema.extract``) the state reads.
DEVICE = {"duo": "authdevicename", "azure": "deviceDetaildisplayName"}
BROWSER_OS = {
    "duo": ("accessdevicebrowser", "accessdeviceos"),
    "azure": ("deviceDetailbrowser", "deviceDetailoperatingSystem"),
}
APP = {"duo": "application", "azure": "appDisplayName"}


@dataclass
class UserState:
    """What one user has done so far; JSON-ready through ``to_dict``/``from_dict``.

    Value maps (countries, devices, ...) hold ``[count, first seen (epoch s)]`` per value.
    """

    n: int = 0
    n_ok: int = 0
    hours: list[float] = field(default_factory=lambda: [0.0] * 24)
    countries: dict[str, list[float]] = field(default_factory=dict)
    devices: dict[str, list[float]] = field(default_factory=dict)
    browser_os: dict[str, list[float]] = field(default_factory=dict)
    apps: dict[str, list[float]] = field(default_factory=dict)
    recent: list[list[float]] = field(default_factory=list)  # [epoch s, failed 0/1]
    places: list[list[float]] = field(default_factory=list)  # [epoch s, lat, lon]
    day: str | None = None
    day_count: int = 0
    day_locations: list[str] = field(default_factory=list)
    day_apps: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (copies: what ``dataclasses.asdict`` gives, without its deep
        recursion, which cost the gateway ~0.7 ms a user)."""
        return {
            "n": self.n,
            "n_ok": self.n_ok,
            "hours": list(self.hours),
            "countries": {k: list(v) for k, v in self.countries.items()},
            "devices": {k: list(v) for k, v in self.devices.items()},
            "browser_os": {k: list(v) for k, v in self.browser_os.items()},
            "apps": {k: list(v) for k, v in self.apps.items()},
            "recent": [list(r) for r in self.recent],
            "places": [list(p) for p in self.places],
            "day": self.day,
            "day_count": self.day_count,
            "day_locations": list(self.day_locations),
            "day_apps": list(self.day_apps),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserState:
        """Rebuild from ``to_dict`` output; unknown keys are refused, naming them."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"user state has unknown fields {sorted(unknown)}")
        return cls(**dict(data))


def _is_new(values: dict[str, list[float]], key: str, t: float) -> float:
    """1 when ``key`` was never used, or first used less than ``ESTABLISHED_S`` ago."""
    seen = values.get(key)
    return float(seen is None or t - seen[1] < ESTABLISHED_S)


def _bump(values: dict[str, list[float]], key: str, t: float) -> None:
    """Count ``key``; keep at most ``MAX_VALUES`` values (the rarest go first)."""
    seen = values.get(key)
    if seen is None:
        values[key] = [1.0, t]
    else:
        seen[0] += 1.0
        seen[1] = min(seen[1], t)
    if len(values) > MAX_VALUES:
        rare = min(values, key=lambda k: (values[k][0], k))
        del values[rare]


def solar_hour(t: float, geo: tuple[float, float] | None) -> int:
    """Hour of day on the local solar clock at ``geo`` (UTC when unknown)."""
    offset = geo[1] / 15.0 if geo else 0.0
    return int(math.floor(((t / 3600.0) + offset) % 24.0)) % 24


def _hour_rarity(hours: list[float], n: int, h: int) -> float:
    """``-log10`` of the smoothed share of past logins within an hour of ``h``."""
    near = hours[h] + 0.5 * (hours[(h - 1) % 24] + hours[(h + 1) % 24])
    return -math.log10((near + 1.0) / (2.0 * n + 24.0))


def _hour_gap(hours: list[float], n: int, h: int) -> float:
    """Hours from ``h`` to the nearest of the user's active hours (0 without history)."""
    if n == 0:
        return 0.0
    active = [k for k in range(24) if hours[k] >= ACTIVE_SHARE * n]
    if not active:
        return 0.0
    return float(min(min(abs(h - k), 24 - abs(h - k)) for k in active))


def featurize_event(state: UserState, event: Mapping[str, Any], source: str) -> dict[str, float]:
    """Features of one event against ``state``, then add the event to ``state``."""
    t = float(event["t"])
    geo = centroid(event.get("country"))
    country = str(event.get("country") or "unknown")
    device = str(event.get(DEVICE[source]) or "unknown")
    b, o = BROWSER_OS[source]
    bos = f"{event.get(b) or 'unknown'}|{event.get(o) or 'unknown'}"
    app = str(event.get(APP[source]) or "unknown")
    location = str(event.get("location") or "unknown")
    failed = 1.0 if event.get("failed") else 0.0
    day = str(event["day"])

    state.recent = [r for r in state.recent if 0.0 <= t - r[0] <= RECENT_S]
    state.places = [p for p in state.places if abs(t - p[0]) <= TRAVEL_WINDOW_S]
    speed = 0.0
    new_country = _is_new(state.countries, country, t)
    if geo is not None and new_country:  # coming back to a country of one's own is no trip
        for p_t, lat, lon in state.places:
            km = haversine_km((lat, lon), geo)
            speed = max(speed, km / max(abs(t - p_t) / 3600.0, MIN_TRAVEL_H))
    if state.day != day:
        state.day, state.day_count, state.day_locations, state.day_apps = day, 0, [], []
    h = solar_hour(t, geo)
    feats = {
        "logcount": float(state.day_count + 1),
        "locincrement": float(len(set(state.day_locations) | {location})),
        "appincrement": float(len(set(state.day_apps) | {app})),
        "hour_rarity": _hour_rarity(state.hours, state.n_ok, h),
        "hour_gap": _hour_gap(state.hours, state.n_ok, h),
        "fails_recent": failed + sum(r[1] for r in state.recent),
        "events_recent": 1.0 + len(state.recent),
        "log_speed": math.log10(1.0 + speed),
        "history_depth": math.log10(1.0 + state.n),
        "new_country": new_country,
        "new_device": _is_new(state.devices, device, t),
        "new_browser_os": _is_new(state.browser_os, bos, t),
        "new_app": _is_new(state.apps, app, t),
    }
    # update: every login counts as recent activity, but only a successful one is evidence of
    # where, when and with what the user logs in (an attacker's failures must not teach it)
    state.n += 1
    state.recent.append([t, failed])
    if not failed:
        state.n_ok += 1
        state.hours[h] += 1.0
        _bump(state.countries, country, t)
        _bump(state.devices, device, t)
        _bump(state.browser_os, bos, t)
        _bump(state.apps, app, t)
        if geo is not None:
            state.places.append([t, geo[0], geo[1]])
            del state.places[:-MAX_TRAVEL_POINTS]
    state.day_count += 1
    if location not in state.day_locations:
        state.day_locations.append(location)
    if app not in state.day_apps:
        state.day_apps.append(app)
    return feats


FEATURE_COLUMNS = ("logcount", "locincrement", "appincrement", *HISTORY_FEATURES)


def featurize(
    df: pd.DataFrame, source: str, states: MutableMapping[str, UserState] | None = None
) -> pd.DataFrame:
    """History features of every row of ``df`` in row order (sort by time first).

    ``df`` holds ``schema.extract`` columns (``username``, ``timestamp``, ``country``, the
    device, browser, OS and app columns, ``failed``, ``location``). ``states`` maps user to
    state and is updated in place; a user not in it starts empty.
    """
    cols = list(FEATURE_COLUMNS)
    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols}, index=df.index)
    ts = pd.to_datetime(df["timestamp"], utc=True)
    ns = ts.dt.as_unit("ns").astype("int64").to_numpy()
    b, o = BROWSER_OS[source]
    need = ["username", "country", DEVICE[source], b, o, APP[source], "failed", "location"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise KeyError(f"history features need column(s) {missing}")
    out = featurize_columns(ns, {c: df[c].tolist() for c in need}, source, states, ts.dt.unit)
    return pd.DataFrame(out, columns=cols, index=df.index)


def featurize_columns(
    ns: np.ndarray,
    columns: Mapping[str, Sequence[Any]],
    source: str,
    states: MutableMapping[str, UserState] | None = None,
    unit: str = "ns",
) -> np.ndarray:
    """History features (``FEATURE_COLUMNS``, float64, one row per event) of events in the
    order given (sort by time first): ``ns`` their times (epoch ns), ``columns`` the
    ``schema.extract`` columns the state reads, ``unit`` the unit the times are held in
    (``schema.Events.unit``). The one featurizer behind ``featurize`` (training, batch) and
    the gateway."""
    states = {} if states is None else states
    # seconds as (timestamp - epoch) / 1 s computes them on a column held in ``unit``
    per_s = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    t = (ns // (1_000_000_000 // per_s)).astype(np.float64) / float(per_s)
    days = (ns // 86_400_000_000_000).astype("datetime64[D]").astype(str)
    b, o = BROWSER_OS[source]
    need = ["username", "country", DEVICE[source], b, o, APP[source], "failed", "location"]
    out = np.zeros((len(ns), len(FEATURE_COLUMNS)), dtype=np.float64)
    values = [columns[c] for c in need]
    for i, row in enumerate(zip(*values, strict=True)):
        rec = dict(zip(need, row, strict=True))
        rec["t"], rec["day"] = t[i], days[i]
        user = str(rec["username"])
        state = states.get(user)
        if state is None:
            state = states[user] = UserState()
        f = featurize_event(state, rec, source)
        out[i] = [f[c] for c in FEATURE_COLUMNS]
    return out


def load_states(store: Any, source: str, users: Iterable[str]) -> dict[str, UserState]:
    """The users' states kept in ``store`` (a ``secml.store.DetectionStore``)."""
    stored = store.load_user_states(source, users)
    return {u: UserState.from_dict(d) for u, d in stored.items()}


def save_states(
    store: Any, source: str, states: Mapping[str, UserState], *, only_new: bool = False
) -> int:
    """Write the users' states to ``store``; ``only_new`` leaves stored ones alone."""
    data = {u: s.to_dict() for u, s in states.items()}
    return store.save_user_states(source, data, only_new=only_new)
