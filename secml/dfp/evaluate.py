"""Evaluate DFP on generated data with injected attacks: per attack type, two strategies.

Per attack type, the attack's events are the positives and every unlabelled (benign) event is
a negative: ``precision = TP / (TP + benign flagged)``, ``recall = TP / attack events``,
``roc_auc`` of ``mean_abs_z`` separating the two. Strategies compared on the same events:
``per_user+generic`` (a user's own model when they had enough history, else the generic one)
and ``generic`` (the generic model for everyone). Models are trained in process (no MLflow)
so the table measures the method, not the servers.

CLI: ``python -m secml.dfp.evaluate --data DIR --source duo`` where ``DIR`` is the generator's
output (``<source>-training-data``, ``<source>-inference-data``, ``labels_<source>.csv``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from secml.dfp.schema import check_source
from secml.settings import get_settings

log = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("per_user+generic", "generic")
METRIC_COLUMNS = [
    "attack_type",
    "attack_events",
    "detected",
    "benign_events",
    "benign_flagged",
    "precision",
    "recall",
    "roc_auc",
]


def read_labels(path: str | Path) -> pd.DataFrame:
    """The generator's labels CSV (``event_id``, ``attack_type``, ...), checked."""
    labels = pd.read_csv(path, dtype=str)
    missing = {"event_id", "attack_type"} - set(labels.columns)
    if missing:
        raise ValueError(f"labels file {path} lacks columns {sorted(missing)}")
    return labels


def collateral(scores: pd.DataFrame, labels: pd.DataFrame) -> np.ndarray:
    """Benign events of an attacked user later on the attack's UTC day.

    The per-day running features (``logcount``, ``locincrement``, ``appincrement``) carry an
    attack into the user's next events that day, so those events look anomalous for a reason.
    """
    if not {"username", "timestamp"} <= set(scores.columns):
        raise KeyError("collateral: scores need 'username' and 'timestamp' columns")
    ts = pd.to_datetime(scores["timestamp"], utc=True)
    attacked = scores["event_id"].isin(set(labels["event_id"])).to_numpy()
    first = (
        pd.DataFrame({"u": scores["username"], "d": ts.dt.floor("D"), "t": ts})[attacked]
        .groupby(["u", "d"])["t"]
        .min()
    )
    key = pd.MultiIndex.from_arrays([scores["username"], ts.dt.floor("D")])
    start = pd.Series(first.reindex(key).to_numpy(), index=scores.index)
    return (~attacked) & start.notna().to_numpy() & (ts > start).to_numpy()


def attack_metrics(
    scores: pd.DataFrame,
    labels: pd.DataFrame,
    threshold: float | None = None,
    *,
    exclude_collateral: bool = False,
) -> pd.DataFrame:
    """Precision, recall and ROC AUC of ``mean_abs_z`` per attack type, plus ``all``.

    With ``exclude_collateral`` the benign events that follow an attack on the same user and
    day (see ``collateral``) are left out of the negatives.
    """
    for col in ("event_id", "mean_abs_z"):
        if col not in scores.columns:
            raise KeyError(f"attack_metrics: scores lack column {col!r}")
    thr = get_settings().dfp_z_threshold if threshold is None else float(threshold)
    if exclude_collateral:
        scores = scores[~collateral(scores, labels)]
    kinds = labels.drop_duplicates("event_id").set_index("event_id")["attack_type"]
    kind = scores["event_id"].map(kinds)
    z = scores["mean_abs_z"].astype(float).to_numpy()
    flagged = z > thr
    benign = kind.isna().to_numpy()
    unscored = set(labels["event_id"]) - set(scores["event_id"])
    if unscored:
        log.warning("%d labelled events were not scored", len(unscored))
    rows = []
    types = sorted(kind.dropna().unique())
    for t in [*types, "all"]:
        pos = kind.notna().to_numpy() if t == "all" else (kind == t).to_numpy()
        tp, fp = int((flagged & pos).sum()), int((flagged & benign).sum())
        mask = pos | benign
        auc = (
            float(roc_auc_score(pos[mask], z[mask])) if pos.any() and benign.any() else float("nan")
        )
        rows.append(
            {
                "attack_type": t,
                "attack_events": int(pos.sum()),
                "detected": tp,
                "benign_events": int(benign.sum()),
                "benign_flagged": fp,
                "precision": tp / (tp + fp) if tp + fp else float("nan"),
                "recall": tp / int(pos.sum()) if pos.any() else float("nan"),
                "roc_auc": auc,
            }
        )
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def compare(
    scored: Mapping[str, pd.DataFrame],
    labels: pd.DataFrame,
    threshold: float | None = None,
    *,
    exclude_collateral: bool = False,
) -> pd.DataFrame:
    """One metrics table with a ``strategy`` column for each scored frame."""
    parts = []
    for strategy, scores in scored.items():
        table = attack_metrics(scores, labels, threshold, exclude_collateral=exclude_collateral)
        table.insert(0, "strategy", strategy)
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def score_strategies(
    train: pd.DataFrame,
    test: pd.DataFrame,
    source: str,
    *,
    min_events: int | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, pd.DataFrame]:
    """Train generic + per-user autoencoders in process; score ``test`` both ways."""
    from secml.dfp.model import AutoEncoder, feature_config
    from secml.dfp.split import split_users

    check_source(source)
    params = params or {}
    split = split_users(train, "all", min_events=min_events)
    if split.generic is None:
        raise ValueError("evaluation needs training events")
    generic = AutoEncoder(feature_config(source), **params).fit(split.generic)
    log.info("generic model trained on %d events", len(split.generic))
    own: dict[str, Any] = {}
    for i, (user, rows) in enumerate(split.users.items(), start=1):
        own[user] = AutoEncoder(feature_config(source), **params).fit(rows)
        log.info("[%d/%d] model of %s trained on %d events", i, len(split.users), user, len(rows))
    base = test[["event_id", "username", "timestamp"]].reset_index(drop=True)
    tst = test.reset_index(drop=True)
    generic_scores = generic.score(tst)
    per_user = generic_scores.copy()
    for user, idx in tst.groupby("username").groups.items():
        if user in own:
            per_user.loc[idx] = own[user].score(tst.loc[idx]).to_numpy()
    out = {}
    for name, sc in (("per_user+generic", per_user), ("generic", generic_scores)):
        frame = base.copy()
        frame["mean_abs_z"] = sc["mean_abs_z"].astype(float).to_numpy()
        frame["max_abs_z"] = sc["max_abs_z"].astype(float).to_numpy()
        frame["own_model"] = base["username"].isin(own).to_numpy() if name != "generic" else False
        out[name] = frame
    return out


def to_markdown(table: pd.DataFrame) -> str:
    """The metrics table as a Markdown table (3 decimals)."""
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) and not np.isnan(v) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: evaluate one source of a generated data set and print the table."""
    from secml.dfp.loader import load_records
    from secml.dfp.schema import process

    p = argparse.ArgumentParser(
        prog="python -m secml.dfp.evaluate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--data", type=Path, required=True, help="generator output directory")
    p.add_argument("--source", choices=("duo", "azure"), required=True)
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--min-events", type=int, default=None)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    prefix = {"duo": "DUO", "azure": "AZUREAD"}[args.source]
    train = process(
        load_records(
            str(args.data / f"{args.source}-training-data" / f"{prefix}_*.json"), args.source
        ),
        args.source,
    )
    test = process(
        load_records(
            str(args.data / f"{args.source}-inference-data" / f"{prefix}_*.json"), args.source
        ),
        args.source,
    )
    labels = read_labels(args.data / f"labels_{args.source}.csv")
    params = {"max_epochs": args.max_epochs} if args.max_epochs else {}
    scored = score_strategies(train, test, args.source, min_events=args.min_events, params=params)
    table = compare(scored, labels, args.threshold)
    clean = compare(scored, labels, args.threshold, exclude_collateral=True)
    log.info(
        "evaluation of %s (%d training, %d test events), every benign event:\n%s\n"
        "without benign events after an attack on the same user and day:\n%s",
        args.source,
        len(train),
        len(test),
        to_markdown(table),
        to_markdown(clean),
    )
    if args.out:
        both = pd.concat(
            [table.assign(negatives="all"), clean.assign(negatives="no_collateral")],
            ignore_index=True,
        )
        both.to_csv(args.out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
