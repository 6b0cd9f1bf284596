"""DFP detection quality on data the detector was not built from: train on one, score on another.

``prepare`` reads a generated data set (``<source>-training-data``, ``<source>-inference-data``,
``labels_<source>.csv`` and, when present, ``benign_<source>.csv`` naming the benign drift
kind of hard negatives) and featurizes it with one per-user state carried from the history
days into the scored days, as production does. ``fit_detector`` trains the autoencoders
(generic + per-user) on the history days but the last ``holdout_days``; those held-out days
calibrate each model's score scale and the risk threshold. ``train_reference_risk`` trains the
risk model on a *different* labelled data set (the training generator's). ``evaluate`` scores
the scored days and ``summary``, ``by_kind`` and ``by_model`` measure, beside the one-line
novelty rule ("country or OS/browser never seen for this user") and the autoencoder alone at
the same alert rate:

- per attack type: event recall and incident recall (an incident is caught when any of its
  events alerts);
- false-positive rate per benign drift kind and for ordinary logins;
- precision, recall, F1, ROC AUC, PR AUC, FPR on benign events, alerts per 1,000 benign events;
- the same for users with their own model and users scored by the generic one.
"""

from __future__ import annotations

import copy
import functools
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from secml.dfp import generator
from secml.dfp.evaluate import read_labels
from secml.dfp.generator import FILE_PREFIX
from secml.dfp.history import UserState
from secml.dfp.loader import load_records
from secml.dfp.model import AutoEncoder
from secml.dfp.schema import check_source, process
from secml.dfp.scoring import RiskModel
from secml.dfp.split import split_users
from secml.naming import GENERIC_USER

log = logging.getLogger(__name__)

# Attacks injected into the risk model's reference training set (types in turn).
REFERENCE_ATTACKS = 150
# Benign drift (trips, new devices, adopted apps) oversampled in the labelled days of that set:
# the hard negatives the risk model must learn to let through.
REFERENCE_DRIFT_BOOST = 3.0
HOLDOUT_DAYS = 5
# One analyst's label counts as much as this many reference rows.
ANALYST_WEIGHT = 20.0
ORDINARY = "ordinary"
# Logins of a user with fewer past events than this are the state's warm-up: every value is
# new to it, so they teach the risk model nothing about drift and are left out of its training.
WARMUP_EVENTS = 20
DETECTORS = ("secml", "autoencoder", "novelty_rule")


@dataclass
class Dataset:
    """One featurized data set: history days, scored days and their labels."""

    source: str
    history: pd.DataFrame
    scored: pd.DataFrame


def prepare(data: str | Path, source: str) -> Dataset:
    """Read and featurize a generated data set; label the scored days.

    ``scored`` gains ``attack_type`` (None for benign), ``attack_id`` and ``kind`` (the
    attack type, the benign drift kind, or ``ordinary``).
    """
    check_source(source)
    d = Path(data)
    prefix = FILE_PREFIX[source]
    states: dict[str, UserState] = {}
    hist = process(
        load_records(str(d / f"{source}-training-data" / f"{prefix}_*.json"), source),
        source,
        states,
    )
    scored = process(
        load_records(str(d / f"{source}-inference-data" / f"{prefix}_*.json"), source),
        source,
        states,
    )
    labels = read_labels(d / f"labels_{source}.csv").drop_duplicates("event_id")
    by_id = labels.set_index("event_id")
    scored["attack_type"] = scored["event_id"].map(by_id["attack_type"])
    ids = by_id["attack_id"] if "attack_id" in by_id.columns else by_id["attack_type"]
    scored["attack_id"] = scored["event_id"].map(ids)
    kind = scored["attack_type"].astype(object)
    benign_file = d / f"benign_{source}.csv"
    if benign_file.is_file():
        drift = pd.read_csv(benign_file, dtype=str).drop_duplicates("event_id")
        kind = kind.fillna(scored["event_id"].map(drift.set_index("event_id")["kind"]))
    scored["kind"] = kind.fillna(ORDINARY)
    missing = set(labels["event_id"]) - set(scored["event_id"])
    if missing:
        log.warning("%d labelled events are not in the scored days", len(missing))
    return Dataset(source, hist, scored)


def warm(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows past their user's warm-up (``WARMUP_EVENTS`` earlier logins)."""
    return rows[rows["history_depth"] >= np.log10(1 + WARMUP_EVENTS)]


def calibrate(detector: Detector, held: pd.DataFrame, alert_rate: float) -> None:
    """Set ``detector``'s alert rate and its risk threshold on the held-out days' warm rows."""
    if detector.risk is None:
        raise ValueError("the detector has no risk model")
    detector.alert_rate = alert_rate
    cal = detector.score(held)
    warm_cal = warm(cal)
    detector.risk.calibrate(cal if warm_cal.empty else warm_cal, alert_rate)


def split_holdout(history: pd.DataFrame, holdout_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History days before the last ``holdout_days`` (training) and those days (held out)."""
    ts = pd.to_datetime(history["timestamp"], utc=True)
    cut = ts.max().floor("D") - pd.Timedelta(days=holdout_days - 1)
    return history[ts < cut], history[ts >= cut]


@dataclass
class Detector:
    """The autoencoders of one data set and the risk model that combines their scores."""

    source: str
    generic: AutoEncoder
    users: dict[str, AutoEncoder]
    risk: RiskModel | None = None
    alert_rate: float = 0.005

    def score(self, events: pd.DataFrame) -> pd.DataFrame:
        """Autoencoder scores (own model, else generic) and ``ae_surprisal`` of ``events``."""
        out = events.reset_index(drop=True).copy()
        z = np.zeros(len(out))
        surprisal = np.zeros(len(out))
        thr = np.zeros(len(out))
        own = np.zeros(len(out), dtype=bool)
        for user, idx in out.groupby("username", sort=False).groups.items():
            model = self.users.get(str(user), self.generic)
            pos = np.asarray(idx)
            s = model.score(out.loc[idx])["mean_abs_z"].to_numpy()
            z[pos], surprisal[pos] = s, model.surprisal(s)
            thr[pos] = model.threshold_for(self.alert_rate)
            own[pos] = model is not self.generic
        out["mean_abs_z"], out["ae_surprisal"], out["own_model"] = z, surprisal, own
        out["ae_threshold"] = thr
        if self.risk is not None:
            out["risk"] = self.risk.score(out)
        return out


def prefer_own(own: AutoEncoder, generic: AutoEncoder, held: pd.DataFrame | None) -> bool:
    """Per-user or generic, by held-out evidence: the own model must reconstruct the user's
    held-out days no worse than the generic model does (kept when there are none)."""
    if held is None or held.empty:
        return True
    return own.loss(held) <= generic.loss(held)


def fit_detector(
    ds: Dataset,
    *,
    holdout_days: int = HOLDOUT_DAYS,
    min_events: int | None = None,
    per_user: bool = True,
    params: Mapping[str, Any] | None = None,
) -> tuple[Detector, pd.DataFrame]:
    """Train generic (+ per-user) autoencoders on the history minus its last days.

    Returns the detector and the held-out days (to calibrate thresholds on).
    """
    train, held = split_holdout(ds.history, holdout_days)
    from secml.dfp.model import feature_config

    cfg = feature_config(ds.source)
    params = dict(params or {})
    split = split_users(train, "all" if per_user else "generic", min_events=min_events)
    if split.generic is None:
        raise ValueError("no history to train on")
    generic = AutoEncoder(cfg, **params).fit(split.generic)
    users: dict[str, AutoEncoder] = {}
    rejected = 0
    held_by_user = dict(tuple(held.groupby("username")))
    for i, (user, rows) in enumerate(split.users.items(), start=1):
        if user == GENERIC_USER:
            continue
        model = AutoEncoder(cfg, **params).fit(rows)
        log.debug("[%d/%d] %s: %d rows", i, len(split.users), user, len(rows))
        if prefer_own(model, generic, held_by_user.get(user)):
            users[user] = model
        else:
            rejected += 1
    log.info(
        "%s: generic model on %d events, %d per-user models kept (%d lost to the generic one "
        "on their held-out days), %d held-out events",
        ds.source,
        len(train),
        len(users),
        rejected,
        len(held),
    )
    return Detector(ds.source, generic, users), held


def risk_training_rows(ds: Dataset, detector: Detector, held: pd.DataFrame) -> pd.DataFrame:
    """Labelled rows to train a risk model: held-out days (benign) and scored days."""
    rows = pd.concat(
        [detector.score(held).assign(y=0), detector.score(ds.scored).assign(y=0)],
        ignore_index=True,
    )
    n = len(held)
    rows.loc[n:, "y"] = ds.scored["attack_type"].notna().astype(int).to_numpy()
    return rows[rows.index.isin(warm(rows).index) | (rows["y"] == 1)]


def evaluate(
    ds: Dataset, detector: Detector, held: pd.DataFrame, alert_rate: float
) -> pd.DataFrame:
    """Score ``ds``'s scored days; add each detector's decision (``alert_<detector>``)."""
    calibrate(detector, held, alert_rate)
    out = detector.score(ds.scored)
    out["alert_secml"] = out["risk"] > detector.risk.threshold
    out["score_secml"] = out["risk"]
    # the autoencoder alone, each model at its own held-out quantile for the same alert rate
    out["alert_autoencoder"] = out["mean_abs_z"] > out["ae_threshold"]
    out["score_autoencoder"] = out["ae_surprisal"]
    rule = (out["new_country"] > 0) | (out["new_browser_os"] > 0)
    out["alert_novelty_rule"] = rule
    out["score_novelty_rule"] = out["new_country"] + out["new_browser_os"]
    return out


def _safe(fn: Any, y: np.ndarray, s: np.ndarray) -> float:
    return float(fn(y, s)) if 0 < y.sum() < len(y) else float("nan")


def summary(scored: pd.DataFrame, det: str) -> dict[str, float]:
    """Overall metrics of detector ``det`` on scored events."""
    y = scored["attack_type"].notna().to_numpy()
    a = scored[f"alert_{det}"].to_numpy(dtype=bool)
    s = scored[f"score_{det}"].to_numpy(dtype=float)
    tp, fp = int((a & y).sum()), int((a & ~y).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / int(y.sum()) if y.any() else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    n_benign = int((~y).sum())
    return {
        "precision": prec,
        "recall": rec,
        "f1": f1,
        "roc_auc": _safe(roc_auc_score, y, s),
        "pr_auc": _safe(average_precision_score, y, s),
        "fpr": fp / n_benign if n_benign else float("nan"),
        "alerts_per_1k_benign": 1000.0 * fp / n_benign if n_benign else float("nan"),
        "attack_events": float(y.sum()),
        "benign_events": float(n_benign),
    }


def by_kind(scored: pd.DataFrame, det: str) -> pd.DataFrame:
    """Per attack type (event and incident recall) and per benign kind (FPR)."""
    a = scored[f"alert_{det}"].astype(bool)
    rows = []
    attacks = scored[scored["attack_type"].notna()]
    for t, grp in attacks.groupby("attack_type"):
        inc = a[grp.index].groupby(grp["attack_id"]).any()
        rows.append(
            {
                "kind": t,
                "class": "attack",
                "events": len(grp),
                "event_recall": float(a[grp.index].mean()),
                "incidents": len(inc),
                "incident_recall": float(inc.mean()),
                "fpr": float("nan"),
            }
        )
    benign = scored[scored["attack_type"].isna()]
    for k, grp in benign.groupby("kind"):
        rows.append(
            {
                "kind": k,
                "class": "benign",
                "events": len(grp),
                "event_recall": float("nan"),
                "incidents": 0,
                "incident_recall": float("nan"),
                "fpr": float(a[grp.index].mean()),
            }
        )
    return pd.DataFrame(rows)


def by_model(scored: pd.DataFrame, det: str) -> pd.DataFrame:
    """Recall and FPR for users with their own model and users scored by the generic one."""
    rows = []
    y = scored["attack_type"].notna()
    a = scored[f"alert_{det}"].astype(bool)
    for own, grp in scored.groupby("own_model"):
        yy, aa = y[grp.index], a[grp.index]
        rows.append(
            {
                "users": "own model" if own else "generic model",
                "events": len(grp),
                "recall": float(aa[yy].mean()) if yy.any() else float("nan"),
                "fpr": float(aa[~yy].mean()) if (~yy).any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def reference_rows(
    source: str, *, seed: int = 0, users: int = 80, days: int = 30, work: Path | None = None
) -> pd.DataFrame:
    """Labelled risk-model rows from the training generator's data set (seed ``1000+seed``):
    its attacks and its benign days, hard negatives oversampled."""
    with tempfile.TemporaryDirectory(prefix="dfp-risk-") as tmp:
        out = (work or Path(tmp)) / f"reference-{source}-{seed}"
        start = date(2022, 8, 1)
        gen = generator.generate(
            source,
            n_users=users,
            days=days,
            start=start,
            seed=1000 + seed,
            n_attacks=REFERENCE_ATTACKS,
            drift_boost=REFERENCE_DRIFT_BOOST,
            drift_from=days - HOLDOUT_DAYS - 2,
        )
        split = datetime.combine(start, datetime.min.time(), UTC) + timedelta(days=days - 2)
        generator.write_dataset(gen, out, split)
        ds = prepare(out, source)
    detector, held = fit_detector(ds, per_user=False)
    return risk_training_rows(ds, detector, held)


def train_risk(
    reference: pd.DataFrame, labelled: pd.DataFrame | None = None, seed: int = 0
) -> RiskModel:
    """A risk model on the reference rows plus analysts' labelled rows (``labelled_rows``),
    each analyst label weighing ``ANALYST_WEIGHT`` reference rows."""
    rows = reference
    y = reference["y"].to_numpy()
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    weight = np.where(y == 1, neg / max(pos, 1), 1.0)
    if labelled is not None and not labelled.empty:
        rows = pd.concat([reference, labelled], ignore_index=True)
        weight = np.concatenate([weight, np.full(len(labelled), ANALYST_WEIGHT)])
        log.info(
            "risk model: %d analyst labels (%d true positives)",
            len(labelled),
            int(labelled["y"].sum()),
        )
    return RiskModel(seed=seed).fit(rows, rows["y"].to_numpy(), weight=weight)


def train_reference_risk(
    source: str, *, seed: int = 0, users: int = 80, days: int = 30, work: Path | None = None
) -> RiskModel:
    """A risk model trained on the training generator's labelled data set.

    Its inputs are relative to each user's own history, so what it learns there carries over
    to real users; ``training.dfp_eval`` measures exactly that on an independent scenario set.
    """
    risk = train_risk(reference_rows(source, seed=seed, users=users, days=days, work=work))
    log.info("%s: reference risk model trained on %s", source, risk.trained_on)
    return risk


@functools.lru_cache(maxsize=4)
def cached_reference_rows(source: str, seed: int = 0) -> pd.DataFrame:
    """``reference_rows`` once per process and source (training flows reuse them)."""
    return reference_rows(source, seed=seed)


def fit_generic(
    df: pd.DataFrame,
    source: str,
    *,
    params: Mapping[str, Any] | None = None,
    holdout_days: int = HOLDOUT_DAYS,
    alert_rate: float = 0.005,
    risk: RiskModel | None = None,
    labelled: pd.DataFrame | None = None,
) -> AutoEncoder:
    """The generic autoencoder with its risk model, calibrated on the last ``holdout_days``.

    The autoencoder trains on the days before; the risk model (``risk``, else one trained on
    the reference rows plus the analysts' ``labelled`` rows) gets its threshold from the
    held-out days for ``alert_rate``. With too little history for both, everything trains and
    the threshold is calibrated on the training rows (logged).
    """
    from secml.dfp.model import feature_config

    train, held = split_holdout(df, holdout_days)
    if len(train) < 2 or held.empty:
        log.warning("%s: too little history for held-out days; calibrating in-sample", source)
        train, held = df, df
    model = AutoEncoder(feature_config(source), **dict(params or {})).fit(train)
    if risk is None:
        risk = train_risk(cached_reference_rows(source), labelled)
    else:
        risk = copy.deepcopy(risk)
    calibrate(Detector(source, model, {}, risk), held, alert_rate)
    model.risk = risk
    return model
