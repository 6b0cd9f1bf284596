"""DFP attacks for experiments: mimicry and low-and-slow password spray (Duo and Azure AD logs).

* **Mimicry**: the attacker holds the victim's password and second factor and copies what the
  victim looks like: the same browser, OS, authenticating phone and application, at the
  victim's usual hours, successful; only the country differs (a login from abroad).
* **Low-and-slow spray**: one attacker tries one password per account per day across many
  real accounts, hours apart (never two failures within the detector's 10-minute window),
  from one foreign place and device; every attempt fails.

Both craft raw records of the data set's source (``secml.dfp.generator.duo_record`` or
``azure_record``: Azure's ``deviceDetail.browser``/``operatingSystem``/``displayName``,
``appDisplayName``, ``clientAppUsed``, ``location.countryOrRegion``, ``status.errorCode``)
next to the held-out days of a ``dfp-generator`` data set (``source: duo`` or ``azure``), so
they go through the same featurisation (history state included) as real logins. The
``dfp-autoencoder`` detector is the generic autoencoder of ``secml.dfp`` for that source,
alerting when an event's ``mean_abs_z`` exceeds the quantile of its held-out rows that gives
``alert_rate``.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from secml.experiments.plugins import AttackResult, Data

SOURCE = "duo"
SOURCES = ("duo", "azure")
KINDS = tuple(f"dfp-{s}" for s in SOURCES)
MARK = "secml_exp_id"  # key added to crafted records so their scores can be found again


def _source(rec: dict[str, Any]) -> str:
    """``duo`` or ``azure`` from a record's shape."""
    return "duo" if "isotimestamp" in rec else "azure"


def _time(rec: dict[str, Any]) -> datetime:
    if "isotimestamp" in rec:
        return datetime.fromisoformat(rec["isotimestamp"]).astimezone(UTC)
    # Azure: 7 fractional digits and a Z (``2022-08-01T09:00:00.1234560Z``)
    return datetime.strptime(rec["time"][:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)


def fields(rec: dict[str, Any]) -> dict[str, Any]:
    """What the attacks read of a record, by the same names for Duo and Azure AD."""
    if _source(rec) == "duo":
        dev, loc = rec["access_device"], rec["access_device"]["location"]
        return {"user": rec["user"]["name"], "browser": dev["browser"], "os": dev["os"],
                "device": rec["auth_device"]["name"], "app": rec["application"]["name"],
                "client_app": "", "country": loc["country"], "time": rec["isotimestamp"],
                "result": rec["result"]}  # fmt: skip
    p = rec["properties"]
    dev = p["deviceDetail"]
    return {"user": p["userPrincipalName"], "browser": dev["browser"],
            "os": dev["operatingSystem"], "device": dev["displayName"],
            "app": p["appDisplayName"], "client_app": p["clientAppUsed"],
            "country": p["location"]["countryOrRegion"], "time": rec["time"],
            "result": "success" if int(p["status"]["errorCode"]) == 0 else "failure"}  # fmt: skip


def _source_of(data: Data) -> str:
    source = data.kind.removeprefix("dfp-")
    if source not in SOURCES:
        raise ValueError(f"DFP plugins work on {KINDS}, got data set kind {data.kind!r}")
    return source


def craft(source: str, *, user: str, when: datetime, browser: str, os: str, device: str,
          app: str, client_app: str, place: Any, ok: bool, rng: random.Random) -> dict:  # fmt: skip
    """One login record of ``source``: successful (``ok``) or a wrong password."""
    from secml.dfp.generator import AZURE_FAILURES, azure_record, duo_record

    if source == "duo":
        return duo_record(user=user, when=when, browser=browser, os=os, auth_device=device,
                          city=place.city, state=place.state, country=place.country,
                          result="success" if ok else "denied",
                          reason="user_approved" if ok else "invalid_passcode", rng=rng,
                          app=app)  # fmt: skip
    return azure_record(user=user, when=when, app=app, client_app=client_app or "Browser",
                        browser=browser, device_name=device, os=os, city=place.city,
                        country=place.code, state=place.state,
                        failure_reason=None if ok else AZURE_FAILURES[0],
                        error_code=None if ok else 50126, rng=rng)  # fmt: skip


def dfp_generator(seed: int, workdir: Path, users: int = 20, days: int = 20,
                  test_days: int = 2, source: str = SOURCE) -> Data:  # fmt: skip
    """Benign logs of ``secml.dfp.generator`` (``duo`` or ``azure``): history days train, the
    last ``test_days`` test."""
    from secml.dfp.generator import generate

    if source not in SOURCES:
        raise ValueError(f"dfp-generator: source must be one of {SOURCES}, got {source!r}")
    if not 0 < test_days < days:
        raise ValueError(f"dfp-generator: test_days must be in (0, days), got {test_days}")
    gen = generate(source, n_users=users, days=days, n_attacks=0, sparse_fraction=0.0, seed=seed)
    recs = sorted(gen.records, key=_time)
    cut = _time(recs[-1]).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=test_days - 1
    )
    train = [r for r in recs if _time(r) < cut]
    test = [r for r in recs if _time(r) >= cut]
    return Data(f"dfp-{source}", train, test, {"users": users, "days": days, "cut": cut.isoformat(),
                                               "train_events": len(train),
                                               "test_events": len(test)})  # fmt: skip


class DfpAutoencoder:
    """The generic DFP autoencoder over processed Duo or Azure events; alerts on ``mean_abs_z``."""

    kinds = KINDS

    def __init__(self, seed: int, alert_rate: float = 0.01, **params: Any) -> None:
        self.seed, self.alert_rate, self.params = seed, alert_rate, params
        self.model: Any = None

    def fit(self, data: Data) -> None:
        """Featurise the history days and fit the autoencoder on them."""
        from secml.dfp.model import AutoEncoder, feature_config
        from secml.dfp.schema import process_records

        source = _source_of(data)
        df = process_records(data.train, source)
        self.model = AutoEncoder(feature_config(source), seed=self.seed, **self.params)
        self.model.fit(df)

    def score(self, rows: list[dict[str, Any]], data: Data) -> np.ndarray:
        """``mean_abs_z`` of ``rows``, featurised after the history days (in time order)."""
        from secml.dfp.schema import process_records

        marked = [copy.deepcopy(r) for r in rows]
        for i, r in enumerate(marked):
            r[MARK] = f"secml-exp-{i}"
        allrecs = sorted(list(data.train) + marked, key=_time)
        df = process_records(allrecs, _source_of(data))
        mark = df["_raw"].map(lambda r: r.get(MARK) if isinstance(r, dict) else None)
        idx = {t: k for k, t in enumerate(mark)}
        scored = self.model.score(df)
        z = scored["mean_abs_z"].to_numpy()
        return np.array([z[idx[f"secml-exp-{i}"]] for i in range(len(marked))])

    @property
    def threshold(self) -> float:
        """``mean_abs_z`` exceeded by ``alert_rate`` of the model's held-out rows."""
        return self.model.threshold_for(self.alert_rate)

    def metrics(self, data: Data) -> dict[str, float]:
        """Alert rate on the benign held-out days (all of them are benign)."""
        s = self.score(data.test, data)
        return {"benign_alert_rate": float((s >= self.threshold).mean()),
                "val_loss": float(self.model.val_loss), "events": float(len(s))}  # fmt: skip


def _profile(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What a user looks like: most common browser, OS, device, app, place; their login hours."""
    seen = [fields(r) for r in history]
    out = {k: Counter(f[k] for f in seen).most_common(1)[0][0]
           for k in ("browser", "os", "device", "app", "client_app", "country")}  # fmt: skip
    return out | {"hours": [_time(r).hour + _time(r).minute / 60 for r in history]}


def _foreign(country: str, rng: random.Random) -> Any:
    from secml.dfp.generator import ATTACKER_PLACES

    places = [p for p in ATTACKER_PLACES if country not in (p.country, p.code)]
    return rng.choice(places)


class _Base:
    kinds = KINDS

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}-{type(self).__name__}")

    def craft(self, data: Data) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """The attack's raw records of the data set's source, and extra metrics."""
        raise NotImplementedError

    def run(self, detector: Any, data: Data) -> AttackResult:
        """Craft the attack on the held-out days; score it and the benign days."""
        attacks, extra = self.craft(data)
        return self._result(detector, data, attacks, extra)

    def _result(self, detector: Any, data: Data, attacks: list[dict[str, Any]],
                extra: dict[str, float]) -> AttackResult:  # fmt: skip
        s_att = detector.score(attacks, data)
        s_ben = detector.score(data.test, data)
        t = detector.threshold
        hit = s_att >= t
        seen = [fields(r) for r in attacks]
        users = sorted({f["user"] for f in seen})
        caught = {f["user"] for f, h in zip(seen, hit, strict=True) if h}
        metrics = {"recall": float(hit.mean()), "benign_alert_rate": float((s_ben >= t).mean()),
                   "user_recall": len(caught) / max(1, len(users)),
                   "attack_events": float(len(attacks))} | extra  # fmt: skip
        rows = [{k: f[k] for k in ("user", "time", "country", "result")}
                | {"score": float(s), "alert": bool(s >= t)}
                for f, s in zip(seen, s_att, strict=True)]  # fmt: skip
        return AttackResult(metrics, {"events": rows}, {"scores": _hist(s_ben, s_att, t)})


def _hist(benign: np.ndarray, attack: np.ndarray, threshold: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    hi = float(np.nanpercentile(np.concatenate([benign, attack]), 99.5)) or 1.0
    bins = np.linspace(0, hi, 40)
    ax.hist(np.clip(benign, 0, hi), bins, alpha=0.6, density=True, label="benign (held-out)")
    ax.hist(np.clip(attack, 0, hi), bins, alpha=0.6, density=True, label="attack")
    ax.axvline(threshold, color="C3", ls="--", label="threshold")
    ax.set(xlabel="mean_abs_z", ylabel="density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


class Mimicry(_Base):
    """Successful logins that copy the victim's device, browser, app and hours, from abroad."""

    def __init__(self, seed: int, victims: int = 5, events_per_victim: int = 3) -> None:
        super().__init__(seed)
        self.victims, self.per_victim = victims, events_per_victim

    def craft(self, data: Data) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """The mimicry logins on the held-out days (time order) and what they cover."""
        source = _source_of(data)
        by_user: dict[str, list[dict[str, Any]]] = {}
        for r in data.train:
            by_user.setdefault(fields(r)["user"], []).append(r)
        names = sorted(u for u, h in by_user.items() if len(h) >= 20)
        victims = self.rng.sample(names, min(self.victims, len(names)))
        day0 = min(_time(r) for r in data.test).replace(hour=0, minute=0, second=0, microsecond=0)
        attacks = []
        for user in victims:
            p = _profile(by_user[user])
            place = _foreign(p["country"], self.rng)
            for _ in range(self.per_victim):
                hour = self.rng.choice(p["hours"])  # the victim's own habit (UTC)
                when = day0 + timedelta(hours=hour, minutes=self.rng.uniform(-20, 20))
                attacks.append(craft(source, user=user, when=when, browser=p["browser"],
                                     os=p["os"], device=p["device"], app=p["app"],
                                     client_app=p["client_app"], place=place, ok=True,
                                     rng=self.rng))  # fmt: skip
        attacks.sort(key=_time)
        return attacks, {"victims": float(len(victims))}


class LowAndSlowSpray(_Base):
    """One failed attempt per account per day, hours apart, from one foreign place and device."""

    def __init__(
        self, seed: int, targets: int = 10, days: int = 2, gap_minutes: float = 45.0
    ) -> None:
        super().__init__(seed)
        if gap_minutes < 10:
            raise ValueError(f"gap_minutes must be >= 10 (low and slow), got {gap_minutes}")
        self.targets, self.days, self.gap = targets, days, gap_minutes

    def craft(self, data: Data) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """The spray's failed logins on the held-out days (time order) and what they cover."""
        from secml.dfp.generator import APPS, ATTACKER_BROWSERS, ATTACKER_OSES

        source = _source_of(data)
        names = sorted({fields(r)["user"] for r in data.train})
        targets = self.rng.sample(names, min(self.targets, len(names)))
        place = _foreign("", self.rng)
        browser, os_ = self.rng.choice(ATTACKER_BROWSERS), self.rng.choice(ATTACKER_OSES)
        # Duo: the protected app behind the IdP; Azure AD: one of the tenant's common apps
        app = "Microsoft Azure Active Directory" if source == "duo" else self.rng.choice(APPS[:3])
        day0 = min(_time(r) for r in data.test).replace(hour=0, minute=0, second=0, microsecond=0)
        attacks = []
        for d in range(self.days):
            when = day0 + timedelta(days=d, hours=self.rng.uniform(0, 4))
            for user in self.rng.sample(targets, len(targets)):
                attacks.append(craft(source, user=user, when=when, browser=browser, os=os_,
                                     device="Unknown" if source == "duo" else "", app=app,
                                     client_app="Browser", place=place, ok=False,
                                     rng=self.rng))  # fmt: skip
                when += timedelta(minutes=self.gap * self.rng.uniform(1.0, 1.5))
        attacks.sort(key=_time)
        return attacks, {"targets": float(len(targets))}
