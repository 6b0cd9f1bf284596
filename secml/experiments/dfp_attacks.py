"""DFP attacks for experiments: mimicry and low-and-slow password spray (Duo logs).

* **Mimicry**: the attacker holds the victim's password and second factor and copies what the
  victim looks like: the same browser, OS, authenticating phone and application, at the
  victim's usual hours, successful; only the country differs (a login from abroad).
* **Low-and-slow spray**: one attacker tries one password per account per day across many
  real accounts, hours apart (never two failures within the detector's 10-minute window),
  from one foreign place and device; every attempt fails.

Both craft raw Duo records with ``secml.dfp.generator.duo_record`` next to the held-out days of
a ``dfp-generator`` data set, so they go through the same featurisation (history state included)
as real logins. The ``dfp-autoencoder`` detector is the generic autoencoder of ``secml.dfp``,
alerting when an event's ``mean_abs_z`` exceeds the quantile of its held-out rows that gives
``alert_rate``. Azure AD records are not crafted yet (``source: duo`` only).
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


def _time(rec: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(rec["isotimestamp"]).astimezone(UTC)


def dfp_generator(seed: int, workdir: Path, users: int = 20, days: int = 20,
                  test_days: int = 2, source: str = SOURCE) -> Data:  # fmt: skip
    """Benign Duo logs of ``secml.dfp.generator``: history days train, the last days test."""
    from secml.dfp.generator import generate

    if source != SOURCE:
        raise ValueError(f"dfp-generator: only source 'duo' is supported, got {source!r}")
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
    """The generic DFP autoencoder over processed Duo events; alerts on ``mean_abs_z``."""

    kinds = ("dfp-duo",)

    def __init__(self, seed: int, alert_rate: float = 0.01, **params: Any) -> None:
        self.seed, self.alert_rate, self.params = seed, alert_rate, params
        self.model: Any = None

    def fit(self, data: Data) -> None:
        """Featurise the history days and fit the autoencoder on them."""
        from secml.dfp.model import AutoEncoder, feature_config
        from secml.dfp.schema import process_records

        df = process_records(data.train, SOURCE)
        self.model = AutoEncoder(feature_config(SOURCE), seed=self.seed, **self.params)
        self.model.fit(df)

    def score(self, rows: list[dict[str, Any]], data: Data) -> np.ndarray:
        """``mean_abs_z`` of ``rows``, featurised after the history days (in time order)."""
        from secml.dfp.schema import process_records

        marked = [copy.deepcopy(r) for r in rows]
        for i, r in enumerate(marked):
            r["txid"] = f"secml-exp-{i}"
        allrecs = sorted(list(data.train) + marked, key=_time)
        df = process_records(allrecs, SOURCE)
        txid = df["_raw"].map(lambda r: r.get("txid") if isinstance(r, dict) else None)
        idx = {t: k for k, t in enumerate(txid)}
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
    """What a user looks like: most common browser, OS, phone, app, place; their login hours."""

    def most(key: Any) -> Any:
        return Counter(key(r) for r in history).most_common(1)[0][0]

    return {
        "browser": most(lambda r: r["access_device"]["browser"]),
        "os": most(lambda r: r["access_device"]["os"]),
        "phone": most(lambda r: r["auth_device"]["name"]),
        "app": most(lambda r: r["application"]["name"]),
        "country": most(lambda r: r["access_device"]["location"]["country"]),
        "hours": [_time(r).hour + _time(r).minute / 60 for r in history],
    }


def _foreign(country: str, rng: random.Random) -> Any:
    from secml.dfp.generator import ATTACKER_PLACES

    places = [p for p in ATTACKER_PLACES if p.country != country]
    return rng.choice(places)


class _Base:
    kinds = ("dfp-duo",)

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(f"{seed}-{type(self).__name__}")

    def _result(self, detector: Any, data: Data, attacks: list[dict[str, Any]],
                extra: dict[str, float]) -> AttackResult:  # fmt: skip
        s_att = detector.score(attacks, data)
        s_ben = detector.score(data.test, data)
        t = detector.threshold
        hit = s_att >= t
        users = sorted({r["user"]["name"] for r in attacks})
        caught = {u for u, h in zip((r["user"]["name"] for r in attacks), hit, strict=True) if h}
        metrics = {"recall": float(hit.mean()), "benign_alert_rate": float((s_ben >= t).mean()),
                   "user_recall": len(caught) / max(1, len(users)),
                   "attack_events": float(len(attacks))} | extra  # fmt: skip
        rows = [{"user": r["user"]["name"], "time": r["isotimestamp"],
                 "country": r["access_device"]["location"]["country"],
                 "result": r["result"], "score": float(s), "alert": bool(s >= t)}
                for r, s in zip(attacks, s_att, strict=True)]  # fmt: skip
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

    def run(self, detector: Any, data: Data) -> AttackResult:
        """Craft the mimicry logins on the held-out days; score them and the benign days."""
        from secml.dfp.generator import duo_record

        by_user: dict[str, list[dict[str, Any]]] = {}
        for r in data.train:
            by_user.setdefault(r["user"]["name"], []).append(r)
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
                attacks.append(duo_record(user=user, when=when, browser=p["browser"], os=p["os"],
                                          auth_device=p["phone"], city=place.city,
                                          state=place.state, country=place.country,
                                          result="success", reason="user_approved",
                                          rng=self.rng, app=p["app"]))  # fmt: skip
        attacks.sort(key=_time)
        return self._result(detector, data, attacks, {"victims": float(len(victims))})


class LowAndSlowSpray(_Base):
    """One failed attempt per account per day, hours apart, from one foreign place and device."""

    def __init__(
        self, seed: int, targets: int = 10, days: int = 2, gap_minutes: float = 45.0
    ) -> None:
        super().__init__(seed)
        if gap_minutes < 10:
            raise ValueError(f"gap_minutes must be >= 10 (low and slow), got {gap_minutes}")
        self.targets, self.days, self.gap = targets, days, gap_minutes

    def run(self, detector: Any, data: Data) -> AttackResult:
        """Craft the spray on the held-out days; score it and the benign days."""
        from secml.dfp.generator import ATTACKER_BROWSERS, ATTACKER_OSES, duo_record

        names = sorted({r["user"]["name"] for r in data.train})
        targets = self.rng.sample(names, min(self.targets, len(names)))
        place = _foreign("", self.rng)
        browser, os_ = self.rng.choice(ATTACKER_BROWSERS), self.rng.choice(ATTACKER_OSES)
        day0 = min(_time(r) for r in data.test).replace(hour=0, minute=0, second=0, microsecond=0)
        attacks = []
        for d in range(self.days):
            when = day0 + timedelta(days=d, hours=self.rng.uniform(0, 4))
            for user in self.rng.sample(targets, len(targets)):
                attacks.append(duo_record(user=user, when=when, browser=browser, os=os_,
                                          auth_device="Unknown", city=place.city,
                                          state=place.state, country=place.country,
                                          result="denied", reason="invalid_passcode",
                                          rng=self.rng))  # fmt: skip
                when += timedelta(minutes=self.gap * self.rng.uniform(1.0, 1.5))
        attacks.sort(key=_time)
        return self._result(detector, data, attacks, {"targets": float(len(targets))})
