"""Run an experiment file: ``python -m training.experiment run FILE`` or the ``experiment`` flow.

The file (``secml.experiments.spec``) lists data sets, detectors and attacks (plugins found
through entry points) and the stages to run: ``train`` fits every detector and measures it on
its data set's held-out part, ``attack`` runs every attack against its trained detector,
``report`` writes ``results.json``, ``metrics.csv``, tables and plots and archives them. Detectors
and attacks are Prefect tasks on the file's ``runner`` (threads, a local Dask cluster or a
scheduler). With ``mlflow: true`` one parent run (MLflow experiment ``experiment-<name>``) holds a
nested run per detector and per attack and the report's archive.

    python -m training.experiment validate examples/experiments/abp-robustness.yaml
    python -m training.experiment run examples/experiments/abp-robustness.yaml
    python -m training.experiment plugins

``run`` prints the results' summary as one JSON line, last.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from secml.experiments import plugins, stages
from secml.experiments.spec import ExperimentSpec, SpecError, load_spec
from secml.settings import get_settings
from training.cluster import task_runner

log = logging.getLogger(__name__)


@task(name="experiment-train", cache_policy=NO_CACHE)
def train_task(d: Any, data: Any, seed: int) -> stages.Trained:
    """Train one detector (``secml.experiments.stages.train``)."""
    return stages.train(d, data, seed)


@task(name="experiment-attack", cache_policy=NO_CACHE)
def attack_task(a: Any, trained: Any, data: Any, seed: int) -> stages.Attacked:
    """Run one attack (``secml.experiments.stages.attack``)."""
    return stages.attack(a, trained, data, seed)


def _output_dir(spec: ExperimentSpec) -> Path:
    base = Path(spec.output_dir) if spec.output_dir else get_settings().run_dir / "experiments"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = base / f"{spec.name}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def _log_mlflow(spec: ExperimentSpec, trained: list[stages.Trained],
                attacked: list[stages.Attacked], rep: dict[str, Any] | None) -> str:  # fmt: skip
    """One parent run with a nested run per detector and attack; returns the parent's id."""
    import mlflow

    mlflow.set_tracking_uri(get_settings().mlflow_tracking_uri)
    mlflow.set_experiment(f"experiment-{spec.name}")
    with mlflow.start_run(run_name=spec.name, tags={"secml.experiment": spec.name}) as parent:
        mlflow.log_params({"seed": spec.seed, "stages": ",".join(spec.stages),
                           "detectors": ",".join(d.name for d in spec.detectors),
                           "attacks": ",".join(a.name for a in spec.attacks)})  # fmt: skip
        mlflow.log_dict(spec.model_dump(mode="json"), "experiment.json")
        for t in trained:
            with mlflow.start_run(run_name=f"train {t.name}", nested=True):
                mlflow.set_tags({"stage": "train", "plugin": t.kind})
                mlflow.log_metrics(stages._finite(t.metrics))
        for a in attacked:
            with mlflow.start_run(run_name=f"attack {a.name}", nested=True):
                mlflow.set_tags({"stage": "attack", "plugin": a.kind, "detector": a.detector})
                mlflow.log_metrics(stages._finite(a.metrics))
                for name, png in a.figures.items():
                    _log_png(png, f"plots/{name}.png")
                for name, rows in a.tables.items():
                    mlflow.log_dict({"rows": rows}, f"tables/{name}.json")
        if rep is not None:
            mlflow.log_artifact(rep["archive"])
            mlflow.log_dict(rep["results"], "results.json")
            summary = Path(rep["dir"]) / "figures" / "summary.png"
            if summary.exists():
                mlflow.log_artifact(str(summary), "plots")
    return parent.info.run_id


def _log_png(png: bytes, path: str) -> None:
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / Path(path).name
        p.write_bytes(png)
        mlflow.log_artifact(str(p), str(Path(path).parent))


@flow(name="experiment")
def experiment(file: str, stages_to_run: list[str] | None = None,
               mlflow: bool | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the experiment file ``file`` (its stages, or ``stages_to_run``); return its results.

    Args:
        file: path of the YAML experiment file (validated first; errors name the field).
        stages_to_run: a subset of the file's stages, e.g. ``["train"]``.
        mlflow: override the file's ``mlflow`` switch.
    """
    logger = get_run_logger()
    started = time.monotonic()
    spec = load_spec(file)
    if stages_to_run:
        spec = ExperimentSpec.model_validate(spec.model_dump() | {"stages": stages_to_run})
    use_mlflow = spec.mlflow if mlflow is None else mlflow
    out = _output_dir(spec)
    data = stages.load_data(spec, out)
    trained: list[stages.Trained] = []
    attacked: list[stages.Attacked] = []
    r = spec.runner
    with task_runner(r.dask, r.address, r.workers) as runner:
        if "train" in spec.stages:
            futs = [runner.submit(train_task, {"d": d, "data": data[d.dataset], "seed": spec.seed})
                    for d in spec.detectors]  # fmt: skip
            trained = [f.result() for f in futs]
        by_name = {t.name: t for t in trained}
        det_data = {d.name: data[d.dataset] for d in spec.detectors}
        if "attack" in spec.stages:
            futs = [runner.submit(attack_task, {"a": a, "trained": by_name[a.detector],
                                                "data": det_data[a.detector], "seed": spec.seed})
                    for a in spec.attacks]  # fmt: skip
            attacked = [f.result() for f in futs]
    info = {n: d.info for n, d in data.items()}
    rep = stages.report(spec, out, trained, attacked, info) if "report" in spec.stages else None
    results = rep["results"] if rep else stages.results_of(spec, trained, attacked, info)
    run_id = _log_mlflow(spec, trained, attacked, rep) if use_mlflow else None
    logger.info("experiment %s: %d detectors, %d attacks in %.1f s -> %s", spec.name,
                len(trained), len(attacked), time.monotonic() - started, out)  # fmt: skip
    return results | {"output_dir": str(out), "archive": rep["archive"] if rep else None,
                      "mlflow_run_id": run_id}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """CLI: ``run FILE``, ``validate FILE``, ``plugins``."""
    p = argparse.ArgumentParser(
        prog="python -m training.experiment", description=__doc__.split("\n")[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run an experiment file (as a Prefect flow run)")
    run.add_argument("file")
    run.add_argument("--stages", nargs="+", choices=["train", "attack", "report"])
    run.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    val = sub.add_parser("validate", help="check an experiment file; print what it would run")
    val.add_argument("file")
    sub.add_parser("plugins", help="list the installed data set, detector and attack plugins")
    args = p.parse_args(argv)
    logging.basicConfig(level=get_settings().log_level)
    if args.cmd == "plugins":
        print(json.dumps(plugins.describe(), indent=2))  # noqa: T201
        return 0
    try:
        spec = load_spec(args.file)
    except SpecError as exc:
        print(f"invalid experiment file:\n{exc}", file=sys.stderr)  # noqa: T201
        return 2
    if args.cmd == "validate":
        print(f"{args.file}: ok: {len(spec.datasets)} datasets, {len(spec.detectors)} detectors, "  # noqa: T201
              f"{len(spec.attacks)} attacks; stages {', '.join(spec.stages)}")  # fmt: skip
        return 0
    try:
        res = experiment(args.file, args.stages, False if args.no_mlflow else None)
    except (plugins.PluginError, SpecError, ValueError) as exc:
        print(f"experiment failed: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    keys = ("experiment", "detectors", "attacks", "output_dir", "archive", "mlflow_run_id")
    # one line, last: the summary for scripts (MLflow prints its run links before it)
    print(json.dumps({k: res[k] for k in keys}, default=str))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
