"""DFP quality on logs its training generator never produced, over several seeds, both sources.

For each seed and source:

1. the risk model is trained on a data set of the training generator (``secml.dfp.generator``,
   seed ``1000 + seed``): generic autoencoder, then the combiner on its labelled attacks;
2. an independent data set is drawn from the second scenario set (``secml.dfp.scenarios``,
   seed ``seed``: its own users, habits, drift and attacks); its history days train the
   generic and per-user autoencoders, its last ``--holdout-days`` history days calibrate each
   model and the alert threshold for ``--alert-rate``, and its scored days are judged;
3. beside secml, the same report is printed for the one-line novelty rule ("country or
   OS/browser never seen for this user") and for the autoencoder alone at the same alert rate.

The averages over seeds are printed and, unless ``--no-mlflow``, logged to MLflow (experiment
``dfp-eval``: metrics, the report and the per-seed tables as artifacts).

    python -m training.dfp_eval --seeds 0 1 2 --source duo azure
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from secml.dfp import quality
from secml.settings import get_settings

log = logging.getLogger("training.dfp_eval")

EXPERIMENT = "dfp-eval"
HEAD = ("precision", "recall", "f1", "roc_auc", "pr_auc", "fpr", "alerts_per_1k_benign")


def run_seed(
    source: str, seed: int, work: Path, args: argparse.Namespace
) -> dict[str, pd.DataFrame]:
    """Every table of one seed and source."""
    risk = quality.train_reference_risk(
        source, seed=seed, users=args.train_users, days=args.days, work=work
    )
    data = work / f"eval-{seed}"
    if not (data / f"labels_{source}.csv").is_file():
        from secml.dfp import scenarios

        scenarios.generate(data, source=source, users=args.users, days=args.days, seed=seed)
    ds = quality.prepare(data, source)
    detector, held = quality.fit_detector(
        ds, holdout_days=args.holdout_days, params={"max_epochs": args.max_epochs}
    )
    detector.risk = risk
    scored = quality.evaluate(ds, detector, held, args.alert_rate)
    tables: dict[str, pd.DataFrame] = {}
    rows = []
    for det in quality.DETECTORS:
        rows.append({"detector": det, **quality.summary(scored, det)})
        tables[f"kinds_{det}"] = quality.by_kind(scored, det).assign(detector=det)
        tables[f"models_{det}"] = quality.by_model(scored, det).assign(detector=det)
    tables["summary"] = pd.DataFrame(rows)
    return {k: v.assign(source=source, seed=seed) for k, v in tables.items()}


def _md(df: pd.DataFrame) -> str:
    """A frame as a Markdown table, floats with 3 decimals."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(all_tables: list[dict[str, pd.DataFrame]], seeds: Sequence[int]) -> tuple[str, dict]:
    """Averages over seeds as text, and flat metrics for MLflow."""
    summ = pd.concat([t["summary"] for t in all_tables], ignore_index=True)
    kinds = pd.concat(
        [v for t in all_tables for k, v in t.items() if k.startswith("kinds_")], ignore_index=True
    )
    models = pd.concat(
        [v for t in all_tables for k, v in t.items() if k.startswith("models_")],
        ignore_index=True,
    )
    parts = [f"DFP quality on the independent scenario set, mean over seeds {list(seeds)}"]
    metrics: dict[str, float] = {}
    for source, grp in summ.groupby("source"):
        mean = grp.groupby("detector", sort=False)[list(HEAD)].mean().reset_index()
        parts += [f"\n## {source}: overall\n", _md(mean)]
        for r in mean.itertuples(index=False):
            for h in HEAD:
                metrics[f"{source}.{r.detector}.{h}"] = float(getattr(r, h))
        k = kinds[kinds["source"] == source]
        att = (
            k[k["class"] == "attack"]
            .groupby(["kind", "detector"])[["event_recall", "incident_recall"]]
            .mean()
            .unstack("detector")
        )
        att.columns = [f"{a}:{d}" for a, d in att.columns]
        parts += [f"\n## {source}: recall per attack type\n", _md(att.reset_index())]
        ben = (
            k[k["class"] == "benign"]
            .groupby(["kind", "detector"])["fpr"]
            .mean()
            .unstack("detector")
            .reset_index()
        )
        parts += [f"\n## {source}: FPR per benign kind\n", _md(ben)]
        for r in att.reset_index().itertuples(index=False):
            for col, v in zip(att.columns, r[1:], strict=True):
                metrics[f"{source}.{col.split(':')[1]}.{col.split(':')[0]}.{r[0]}"] = float(v)
        for r in ben.itertuples(index=False):
            for det in quality.DETECTORS:
                if det in ben.columns:
                    metrics[f"{source}.{det}.fpr.{r.kind}"] = float(getattr(r, det))
        m = models[models["source"] == source]
        own = m.groupby(["users", "detector"])[["recall", "fpr"]].mean().reset_index()
        parts += [f"\n## {source}: own-model vs generic-model users\n", _md(own)]
        per_seed = grp[["seed", "detector", "precision", "recall", "f1", "fpr"]]
        parts += [f"\n## {source}: each seed\n", _md(per_seed.reset_index(drop=True))]
    return "\n".join(parts), metrics


def log_mlflow(text: str, metrics: dict[str, float], tables: list, params: dict[str, Any]) -> str:
    """One MLflow run with the metrics, the report and the per-seed tables; its run id."""
    import mlflow

    s = get_settings()
    mlflow.set_tracking_uri(s.mlflow_tracking_uri)
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="dfp-eval") as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k.replace(" ", "_"): v for k, v in metrics.items() if v == v})
        mlflow.log_text(text, "report.md")
        for i, t in enumerate(tables):
            for name, df in t.items():
                mlflow.log_text(df.to_csv(index=False), f"tables/{i}-{name}.csv")
        return run.info.run_id


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    p = argparse.ArgumentParser(prog="python -m training.dfp_eval", description=__doc__)
    p.add_argument("--source", nargs="+", choices=("duo", "azure"), default=["duo", "azure"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--users", type=int, default=120, help="users in the independent set")
    p.add_argument("--train-users", type=int, default=80, help="users of the risk training set")
    p.add_argument("--days", type=int, default=30, help="history days")
    p.add_argument("--holdout-days", type=int, default=5, help="last history days: calibration")
    p.add_argument("--alert-rate", type=float, default=None, help="target benign alert rate")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--work", type=Path, default=None, help="keep generated data here")
    p.add_argument("--no-mlflow", action="store_true", help="print only")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the evaluation, print it, log it."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    if args.alert_rate is None:
        args.alert_rate = get_settings().dfp_target_alert_rate
    t0 = time.perf_counter()
    tables = []
    with tempfile.TemporaryDirectory(prefix="dfp-eval-") as tmp:
        work = args.work or Path(tmp)
        for seed in args.seeds:
            for source in args.source:
                tables.append(run_seed(source, seed, work, args))
    text, metrics = report(tables, args.seeds)
    text += f"\n\n({time.perf_counter() - t0:.0f} s, alert rate target {args.alert_rate})"
    log.info("\n%s", text)
    if not args.no_mlflow:
        params = {k: str(v) for k, v in vars(args).items() if k not in ("work", "no_mlflow")}
        run_id = log_mlflow(text, metrics, tables, params)
        log.info("logged to MLflow experiment %s, run %s", EXPERIMENT, run_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
