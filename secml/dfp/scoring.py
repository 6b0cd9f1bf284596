"""DFP risk: one calibrated score per login from the history features and the autoencoder.

The per-user (or generic) autoencoder says how badly it reconstructs a login; on its own its
``mean_abs_z`` is on a different scale for every model and blind to what a single login cannot
show (a burst of denied pushes, travel speed, the hour against the user's habit). The
:class:`RiskModel` combines, per login:

- the features of ``secml.dfp.history`` (hour rarity, novelty of country/device/browser/app,
  failures and logins in the last minutes, travel speed, history depth), all relative to the
  user's own past, so they mean the same for users, tenants and data sets never seen; and
- ``ae_surprisal``: ``-log10`` of how rare the autoencoder's ``mean_abs_z`` is among the
  held-out rows of the very model that scored it (``AutoEncoder.surprisal``): each model is
  calibrated on its own held-out data, so per-user and generic scores are comparable.

It is a gradient-boosted additive model (depth-1 trees: each input adds its own evidence)
whose output can only rise with every anomaly feature (monotone constraints): more novelty
never makes a login look safer. It is trained on
labelled scenarios (``secml.dfp.generator``'s injected attacks) plus analysts' labels from the
detections store, and its alert threshold is a quantile of the scores of held-out benign days
for a target alert rate (``Settings.dfp_target_alert_rate``), so the number of alerts an analyst
gets is a setting, not an accident of a fixed 2.0. Every alert carries its top contributions
(XGBoost ``pred_contribs``) and a sentence saying why.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

RISK_FILE = "risk.json"
# Columns ``apply_risk`` adds.
RISK_COLUMNS = ("reasons", "risk_top", "risk", "risk_threshold", "anomaly")
FORMAT_VERSION = 1
# Inputs of the risk model, and whether the risk may only rise with each (1) or is free (0).
RISK_INPUTS: dict[str, int] = {
    "hour_gap": 1,
    "new_country": 1,
    "new_device": 1,
    "new_browser_os": 1,
    "new_app": 1,
    "fails_recent": 1,
    "log_speed": 1,
    "history_depth": 0,
    "ae_surprisal": 1,
}
# The lowest alert threshold: the balanced classifier's own boundary.
DECISION_FLOOR = 0.5
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 300,
    # stumps: an additive model, each input's evidence counted on its own; interactions learnt
    # from one labelled data set are what fails to carry over to another
    "max_depth": 1,
    "learning_rate": 0.05,
    "subsample": 0.8,
    "min_child_weight": 5,
    "reg_lambda": 5.0,
}


class RiskModel:
    """Monotone XGBoost over ``RISK_INPUTS`` with a calibrated alert threshold."""

    def __init__(self, params: Mapping[str, Any] | None = None, seed: int = 0) -> None:
        self.params = {**DEFAULT_PARAMS, **(params or {})}
        self.seed = seed
        self.booster: Any = None
        self.threshold: float = math.inf
        self.alert_rate: float | None = None
        self.n_calibration: int = 0
        self.trained_on: dict[str, Any] = {}

    # ------------------------------------------------------------------ training
    @staticmethod
    def matrix(df: pd.DataFrame) -> np.ndarray:
        """The input matrix (rows of ``df``, columns ``RISK_INPUTS``), refusing missing columns."""
        missing = [c for c in RISK_INPUTS if c not in df.columns]
        if missing:
            raise KeyError(f"risk model inputs missing from the frame: {missing}")
        return df[list(RISK_INPUTS)].to_numpy(dtype=np.float32)

    def fit(
        self, df: pd.DataFrame, y: Sequence[int] | np.ndarray, weight: np.ndarray | None = None
    ) -> RiskModel:
        """Train on rows of ``df`` labelled ``y`` (1 = attack); classes are balanced."""
        import xgboost as xgb

        y = np.asarray(y, dtype=np.int32)
        if len(y) != len(df):
            raise ValueError(f"{len(df)} rows but {len(y)} labels")
        if y.min(initial=1) == y.max(initial=0):
            raise ValueError("the risk model needs both attacks (1) and benign events (0)")
        pos, neg = int(y.sum()), int(len(y) - y.sum())
        w = np.where(y == 1, neg / max(pos, 1), 1.0) if weight is None else np.asarray(weight)
        clf = xgb.XGBClassifier(
            **self.params,
            monotone_constraints=tuple(RISK_INPUTS.values()),
            random_state=self.seed,
            n_jobs=1,
            tree_method="hist",
        )
        clf.fit(self.matrix(df), y, sample_weight=w)
        self.booster = clf.get_booster()
        self.trained_on = {"rows": len(y), "attacks": pos, "benign": neg}
        return self

    def calibrate(self, benign: pd.DataFrame, alert_rate: float) -> float:
        """Set the threshold so at most a share ``alert_rate`` of ``benign`` held-out rows alert.

        The threshold is never below ``DECISION_FLOOR``: the model is trained on balanced
        classes, so below 0.5 the evidence favours benign whatever the held-out days say
        (held-out days are quiet days; drift such as travel may not be in them).
        """
        if not 0.0 < alert_rate < 1.0:
            raise ValueError(f"alert_rate must be in (0, 1), got {alert_rate}")
        if benign.empty:
            raise ValueError("calibration needs held-out benign rows")
        s = self.score(benign)
        quantile = float(np.quantile(s, 1.0 - alert_rate, method="higher"))
        self.threshold = max(quantile, DECISION_FLOOR)
        self.alert_rate = alert_rate
        self.n_calibration = len(s)
        log.info(
            "risk threshold %.4f for alert rate %.4f on %d held-out events",
            self.threshold,
            alert_rate,
            len(s),
        )
        return self.threshold

    # ------------------------------------------------------------------ scoring
    def _require(self) -> None:
        if self.booster is None:
            raise RuntimeError("RiskModel is not trained: call fit() or load() first")

    def score(self, df: pd.DataFrame) -> np.ndarray:
        """Attack probability of every row."""
        import xgboost as xgb

        self._require()
        if df.empty:
            return np.zeros(0)
        dm = xgb.DMatrix(self.matrix(df), feature_names=list(RISK_INPUTS))
        return self.booster.predict(dm).astype(np.float64)

    def contributions(self, df: pd.DataFrame) -> np.ndarray:
        """Per-input SHAP contributions (log-odds), rows x ``RISK_INPUTS`` (bias dropped)."""
        import xgboost as xgb

        self._require()
        dm = xgb.DMatrix(self.matrix(df), feature_names=list(RISK_INPUTS))
        return self.booster.predict(dm, pred_contribs=True)[:, :-1]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``risk.json`` (booster, threshold, provenance) into directory ``path``."""
        self._require()
        d = Path(path)
        d.mkdir(parents=True, exist_ok=True)
        raw = self.booster.save_raw(raw_format="json").decode("utf-8")
        meta = {
            "format_version": FORMAT_VERSION,
            "inputs": RISK_INPUTS,
            "params": self.params,
            "threshold": self.threshold if math.isfinite(self.threshold) else None,
            "alert_rate": self.alert_rate,
            "n_calibration": self.n_calibration,
            "trained_on": self.trained_on,
            "booster": json.loads(raw),
        }
        (d / RISK_FILE).write_text(json.dumps(meta))
        return d

    @classmethod
    def load(cls, path: str | Path) -> RiskModel:
        """Load a model written by :meth:`save` (``path`` is the directory or the file)."""
        import xgboost as xgb

        p = Path(path)
        f = p / RISK_FILE if p.is_dir() else p
        meta = json.loads(f.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{f}: unsupported risk model format {meta.get('format_version')}")
        if meta.get("inputs") != RISK_INPUTS:
            raise ValueError(f"{f}: risk model inputs {meta.get('inputs')} != {RISK_INPUTS}")
        model = cls(meta["params"])
        booster = xgb.Booster()
        booster.load_model(bytearray(json.dumps(meta["booster"]).encode("utf-8")))
        model.booster = booster
        thr = meta.get("threshold")
        model.threshold = math.inf if thr is None else float(thr)
        model.alert_rate = meta.get("alert_rate")
        model.n_calibration = int(meta.get("n_calibration", 0))
        model.trained_on = dict(meta.get("trained_on", {}))
        return model


def _country(row: Mapping[str, Any]) -> str:
    return str(row.get("country") or "an unknown country")


_WHY = {
    "hour_rarity": lambda r: (
        f"unusual hour for this user (only {100 * 10 ** -float(r['hour_rarity']):.1f}% of "
        "their logins are within an hour of it, local time)"
    ),
    "hour_gap": lambda r: f"{int(r['hour_gap'])} h outside the user's usual hours (local time)",
    "new_country": lambda r: f"first login from {_country(r)}",
    "new_device": lambda r: "a device this user never used",
    "new_browser_os": lambda r: "a browser/OS this user never used",
    "new_app": lambda r: "an application this user never used",
    "fails_recent": lambda r: (
        f"{int(r['fails_recent'])} failed or denied logins in the last 10 minutes"
    ),
    "log_speed": lambda r: (
        f"travel at about {10 ** float(r['log_speed']) - 1:,.0f} km/h since the previous login"
    ),
    "history_depth": lambda r: (
        "no login history for this account"
        if float(r["history_depth"]) == 0
        else f"little history ({10 ** float(r['history_depth']) - 1:.0f} logins)"
    ),
    "ae_surprisal": lambda r: "the user's model reconstructs this login poorly",
}


def explain(
    rows: pd.DataFrame, contribs: np.ndarray, top: int = 3
) -> list[tuple[list[dict[str, Any]], str]]:
    """For each row: its ``top`` positive contributions and a sentence saying why."""
    names = list(RISK_INPUTS)
    out = []
    for (_, row), c in zip(rows.iterrows(), contribs, strict=True):
        order = [j for j in np.argsort(-c) if c[j] > 0][:top]
        feats = [
            {"feature": names[j], "contribution": float(c[j]), "value": float(row[names[j]])}
            for j in order
        ]
        words = [_WHY[names[j]](row) for j in order]
        out.append((feats, "; ".join(words) if words else "nothing stands out"))
    return out


def apply_risk(
    scored: pd.DataFrame, risk: RiskModel | None, z_threshold: float, top: int = 3
) -> pd.DataFrame:
    """Add ``risk``, ``risk_threshold``, ``anomaly``, ``reasons`` and ``risk_top`` columns.

    ``scored`` holds the history features and ``ae_surprisal``. Without a risk model (models
    trained before it existed) the decision falls back to ``mean_abs_z > z_threshold``.
    Explanations are computed for anomalies only (they cost a SHAP pass).
    """
    out = scored.copy()
    out["reasons"] = ""
    out["risk_top"] = pd.Series([[] for _ in range(len(out))], index=out.index, dtype=object)
    if risk is None:
        out["risk"] = np.nan
        out["risk_threshold"] = np.nan
        out["anomaly"] = out["mean_abs_z"].astype(float) > z_threshold
        return out
    out["risk"] = risk.score(out)
    out["risk_threshold"] = risk.threshold
    out["anomaly"] = out["risk"] > risk.threshold
    flagged = out[out["anomaly"]]
    if not flagged.empty:
        for idx, (feats, words) in zip(
            flagged.index, explain(flagged, risk.contributions(flagged), top), strict=True
        ):
            out.at[idx, "reasons"] = words
            out.at[idx, "risk_top"] = feats
    return out


def risk_details(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a stored detection keeps of its risk: score kind, threshold, reasons, and the
    risk model's inputs (so analysts' labels can retrain the risk model later)."""
    risk = row.get("risk")
    if risk is None or (isinstance(risk, float) and math.isnan(risk)):
        return {"score_kind": "mean_abs_z"}
    return {
        "score_kind": "risk",
        "threshold": float(row["risk_threshold"]),
        "reasons": row.get("reasons") or "",
        "risk_top": row.get("risk_top") or [],
        "ae_surprisal": float(row.get("ae_surprisal", 0.0)),
        "history": {f: float(row[f]) for f in RISK_INPUTS if f in row and f != "ae_surprisal"},
    }


def labelled_rows(labelled: pd.DataFrame) -> pd.DataFrame:
    """Risk-model training rows from analysts' labelled detections (``store.labelled``).

    ``y`` is 1 for ``true_positive`` and 0 for ``false_positive``; detections stored without
    the risk model's inputs (older versions) are left out.
    """
    rows = []
    for details, label in zip(labelled["details"], labelled["label"], strict=True):
        d = details if isinstance(details, Mapping) else {}
        hist = d.get("history") or {}
        if not all(f in hist for f in RISK_INPUTS if f != "ae_surprisal"):
            continue
        row = {f: float(hist[f]) for f in RISK_INPUTS if f != "ae_surprisal"}
        row["ae_surprisal"] = float(d.get("ae_surprisal", 0.0))
        row["y"] = 1 if label == "true_positive" else 0
        rows.append(row)
    return pd.DataFrame(rows, columns=[*RISK_INPUTS, "y"])
