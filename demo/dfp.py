"""End-to-end DFP demo: generate logs with attacks, train per-user models, score, report.

``demo(settings)`` needs only a reachable MLflow server (``make up`` starts one): it writes
generated Duo (and optionally Azure) batch files under ``<data_dir>/dfp-demo``, trains
``generic`` plus every user with enough history on the days before the attack window,
registers and promotes the models, scores the attack window with each user's production model
(else generic), writes the detections file and returns a summary with recall per attack type.
``python -m demo.dfp`` runs it alone and prints the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from secml.dfp.filter import filter_anomalies
from secml.dfp.generator import generate, write_batches, write_labels
from secml.dfp.infer import score_events
from secml.dfp.loader import load_records
from secml.dfp.postprocess import postprocess
from secml.dfp.registry import ModelRegistry
from secml.dfp.schema import process
from secml.dfp.split import split_users
from secml.dfp.train import experiment_id, train_user
from secml.dfp.writer import write_detections
from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)


def demo(
    settings: Settings | None = None,
    sources: Sequence[str] = ("duo",),
    n_users: int = 20,
    days: int = 30,
    attack_days: int = 5,
    n_attacks: int = 30,
    model_params: dict[str, Any] | None = None,
    workers: int = 2,
    seed: int = 42,
) -> dict[str, Any]:
    """Generate, train, score; return per-source counts, detections path and recall by attack."""
    settings = settings or get_settings()
    root = Path(settings.data_dir or settings.run_dir / "data") / "dfp-demo"
    params = {"max_epochs": 15, **(model_params or {})}
    report: dict[str, Any] = {}
    for source in sources:
        gen = generate(
            source,
            n_users=n_users,
            days=days,
            attack_days=attack_days,
            n_attacks=n_attacks,
            seed=seed,
        )
        data_dir = root / source
        for old in data_dir.glob("*.json") if data_dir.exists() else []:
            old.unlink()
        write_batches(gen, data_dir)
        labels = pd.read_csv(write_labels(gen, root), dtype=str)
        events = process(load_records(str(data_dir / "*.json"), source, settings), source)
        cut = events["timestamp"].min().normalize() + pd.Timedelta(days=days - attack_days)
        train_df, test_df = events[events.timestamp < cut], events[events.timestamp >= cut]
        split = split_users(train_df, "all", min_events=settings.dfp_min_user_events)
        experiment_id(source)
        log.info("%s: training %d models on %d events", source, len(split.items()), len(train_df))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(
                pool.map(
                    lambda job, src=source: train_user(job[1], src, job[0], params, settings),
                    split.items(),
                )
            )
        scored = score_events(test_df, source, ModelRegistry(source, settings=settings))
        anomalies = filter_anomalies(scored)
        out = write_detections(
            postprocess(anomalies, source), str(root / f"detections-{source}.jsonl")
        )
        attack = scored["event_id"].isin(set(labels["event_id"]))
        flagged = scored["event_id"].isin(set(anomalies["event_id"]))
        kinds = labels.set_index("event_id")["attack_type"]
        recall = {
            kind: round(float(flagged[scored["event_id"].map(kinds) == kind].mean()), 3)
            for kind in sorted(kinds.unique())
        }
        report[source] = {
            "train_events": len(train_df),
            "test_events": len(test_df),
            "models": len(results),
            "promoted": sum(r.promoted for r in results),
            "users_on_generic": len(split.too_few),
            "attack_events": int(attack.sum()),
            "flagged": int(flagged.sum()),
            "flagged_attacks": int((flagged & attack).sum()),
            "false_positive_rate": round(float(flagged[~attack].mean()), 4),
            "recall_by_attack": recall,
            "detections": out,
        }
        log.info("%s: %s", source, report[source])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: run the demo against the configured MLflow and print the summary."""
    p = argparse.ArgumentParser(prog="python -m demo.dfp", description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=["duo", "azure", "both"], default="duo")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    sources = ("duo", "azure") if args.source == "both" else (args.source,)
    report = demo(
        settings,
        sources,
        n_users=args.users,
        days=args.days,
        model_params={"max_epochs": args.epochs},
    )
    logging.getLogger(__name__).info("demo summary:\n%s", json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
