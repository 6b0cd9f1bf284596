"""Morpheus-like DFP batch pipeline on the command line: load, batch, train, score, write.

Examples::

    python -m training.dfp_cli --source duo --train_users all --start_time 2022-08-01 \\
        --duration 30d --input_file ".run/data/dfp/duo-training-data/DUO_*.json"
    python -m training.dfp_cli --input_file control_messages/duo-load-train-infer-payload.json

``--input_file`` takes data files/globs or control-message files (then each input of the message
runs in order; ``--source``/``--start_time``/``--duration`` override its metadata). Steps:
loader -> batcher -> schema -> split users -> rolling window -> train (MLflow) -> infer
(production model else generic; history features from the users' stored state) -> keep the
risk model's anomalies (or ``mean_abs_z`` > ``--threshold`` when given) -> post-process ->
CSV/JSON lines. Progress is logged per batch and per model; a summary closes the run.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from secml.dfp.batcher import batch_files
from secml.dfp.filter import filter_anomalies
from secml.dfp.history import UserState, load_states, save_states
from secml.dfp.loader import expand_paths, load_records
from secml.dfp.postprocess import postprocess
from secml.dfp.rolling import WindowOptions, rolling_window
from secml.dfp.schema import process, record_user
from secml.dfp.split import TRAIN_USERS, split_users
from secml.dfp.writer import write_detections
from secml.settings import Settings, get_settings
from secml.stack import mlflow_ready
from secml.store import get_store

log = logging.getLogger("dfp_cli")


@dataclass
class Job:
    """One unit of work: files, source, tasks and batching options."""

    source: str
    files: list[str]
    tasks: list[str]
    data_type: str = "payload"
    period: str = "D"
    start_time: pd.Timestamp | None = None
    end_time: pd.Timestamp | None = None
    sampling: Any = None


@dataclass
class Summary:
    """Counters reported at the end of a run."""

    files: int = 0
    batches: int = 0
    events: int = 0
    users: set[str] = field(default_factory=set)
    trained: list[str] = field(default_factory=list)
    promoted: int = 0
    too_few: int = 0
    windows_waiting: int = 0
    scored: int = 0
    anomalies: int = 0
    outputs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def lines(self, seconds: float) -> list[str]:
        """Human-readable closing summary."""
        return [
            f"files {self.files} in {self.batches} batches, {self.events} events, "
            f"{len(self.users)} users",
            f"models trained {len(self.trained)} (promoted {self.promoted}); users below the "
            f"minimum history {self.too_few}; streaming windows not yet triggered "
            f"{self.windows_waiting}",
            f"events scored {self.scored}, anomalies {self.anomalies}",
            *(f"output {p}" for p in self.outputs),
            *(f"error {e}" for e in self.errors),
            f"done in {seconds:.1f}s",
        ]


def parse_duration(text: str) -> pd.Timedelta:
    """A duration like ``60d``, ``12h``, ``1w`` (pandas Timedelta syntax)."""
    try:
        td = pd.Timedelta(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--duration {text!r} is not a duration like 60d") from exc
    if td <= pd.Timedelta(0):
        raise argparse.ArgumentTypeError("--duration must be positive")
    return td


def _utc(text: str | None) -> pd.Timestamp | None:
    """Parse a CLI time into UTC."""
    if text is None:
        return None
    ts = pd.Timestamp(text)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _is_control_message(path: str) -> bool:
    """Whether ``path`` is a local JSON file holding a control message (an object with inputs)."""
    p = Path(path)
    if p.suffix != ".json" or not p.is_file() or p.stat().st_size > 1_000_000:
        return False
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and "inputs" in doc


def jobs_from_args(args: argparse.Namespace) -> list[Job]:
    """Turn CLI arguments (data globs or control messages) into jobs."""
    start = _utc(args.start_time)
    end = start + args.duration if start is not None and args.duration is not None else None
    train_tasks = [] if args.train_users == "none" else ["training"]
    jobs: list[Job] = []
    data: list[str] = []
    for item in args.input_file:
        if _is_control_message(item):
            from secml.control import parse_control_message

            msg = parse_control_message(Path(item))
            for inp in msg.inputs:
                md = inp.metadata
                bo = md.batching_options
                source = args.source or md.source
                if source not in ("duo", "azure"):
                    raise SystemExit(f"{item}: source {source!r} is not a DFP source")
                tasks = [t for t in inp.task_types if t != "load"]
                if args.train_users == "none":
                    tasks = [t for t in tasks if t != "training"]
                jobs.append(
                    Job(
                        source=source,
                        files=inp.files,
                        tasks=tasks,
                        data_type=md.data_type,
                        period=(bo.period if bo and bo.period else args.period),
                        start_time=start
                        or (_utc(bo.start_time.isoformat()) if bo and bo.start_time else None),
                        end_time=end
                        or (_utc(bo.end_time.isoformat()) if bo and bo.end_time else None),
                        sampling=(bo.sampling if bo else None),
                    )
                )
        else:
            data.append(item)
    if data:
        if not args.source:
            raise SystemExit("--source duo|azure is required with data files")
        tasks = train_tasks + (["inference"] if args.infer else [])
        jobs.append(
            Job(
                source=args.source,
                files=data,
                tasks=tasks,
                data_type=args.data_type,
                period=args.period,
                start_time=start,
                end_time=end,
            )
        )
    return jobs


def _train(
    df: pd.DataFrame, job: Job, args: argparse.Namespace, settings: Settings, summary: Summary
) -> None:
    """Split users, apply the rolling window and train every model that is due."""
    from secml.dfp.train import train_user

    split = split_users(
        df,
        args.train_users,
        min_events=args.min_user_events,
        skip_users=args.skip_user,
        only_users=args.only_user,
    )
    summary.too_few += len(split.too_few)
    opts = WindowOptions(
        min_history=args.min_history or settings.dfp_min_user_events,
        min_increment=args.min_increment,
        max_history=args.max_history,
    )
    items = split.items()
    for i, (user, rows) in enumerate(items, start=1):
        window = rolling_window(
            rows,
            user,
            job.source,
            data_type=job.data_type,
            cache_dir=args.cache_dir,
            options=opts,
        )
        if window is None:
            summary.windows_waiting += 1
            continue
        try:
            params = {"max_epochs": args.epochs} if args.epochs else None
            result = train_user(window, job.source, user, params=params, settings=settings)
        except Exception as exc:  # one user's failure must not stop the others
            log.error("training %s/%s failed: %s", job.source, user, exc)
            summary.errors.append(f"train {job.source}/{user}: {exc}")
            continue
        summary.trained.append(result.model_version)
        summary.promoted += int(result.promoted)
        log.info(
            "[%d/%d] trained %s on %d rows (val loss %.4g, %s)",
            i,
            len(items),
            result.model_version,
            result.rows,
            result.val_loss,
            "promoted" if result.promoted else "not promoted",
        )


def _infer(
    df: pd.DataFrame, job: Job, args: argparse.Namespace, settings: Settings, summary: Summary
) -> pd.DataFrame:
    """Score, filter and post-process; return the detections."""
    from secml.dfp.infer import score_events

    scored = score_events(df, job.source, settings=settings)
    summary.scored += len(scored)
    anomalies = filter_anomalies(scored, args.threshold)
    summary.anomalies += len(anomalies)
    return postprocess(scored if args.all_events else anomalies, job.source)


def _load_states(raw: pd.DataFrame, job: Job, settings: Settings) -> dict[str, UserState]:
    """The stored history states of the batch's users (inference continues from them)."""
    users = {record_user(r, job.source) for r in raw["_raw"]}
    return load_states(get_store(), job.source, users)


def _save_states(states: dict[str, UserState], job: Job, settings: Settings) -> None:
    """Store the users' states: inference replaces them, training only seeds new users."""
    if not states and "inference" in job.tasks:
        return
    only_new = "inference" not in job.tasks
    store = get_store()
    n = save_states(store, job.source, states, only_new=only_new)
    log.info("%d %s user states %s in the store", n, job.source, "seeded" if only_new else "saved")


def run_job(job: Job, args: argparse.Namespace, settings: Settings, summary: Summary) -> None:
    """Run one job batch by batch.

    Inference reads each user's history state from the detections store and writes it back,
    so the batch continues where the gateway and earlier batches left off; training computes
    the history features over its own window and seeds the state of users the store lacks.
    """
    files = expand_paths(job.files, settings)
    batches = batch_files(
        files,
        period=job.period,
        start_time=job.start_time,
        end_time=job.end_time,
        sampling=job.sampling,
        settings=settings,
    )
    summary.files += sum(len(b.files) for b in batches)
    summary.batches += len(batches)
    log.info(
        "%s %s (%s): %d files matched, %d in %d batches of %s",
        job.source,
        "+".join(job.tasks) or "load",
        job.data_type,
        len(files),
        sum(len(b.files) for b in batches),
        len(batches),
        job.period,
    )
    frames = []
    infer = "inference" in job.tasks
    for i, batch in enumerate(batches, start=1):
        raw = load_records(batch.files, job.source, settings)
        streaming = job.data_type == "streaming"
        states = _load_states(raw, job, settings) if streaming and infer else {}
        df = process(raw, job.source, states)  # payload: featurized again as a whole below
        if streaming:
            _save_states(states, job, settings)
        summary.events += len(df)
        summary.users.update(df["username"].astype(str))
        log.info(
            "[batch %d/%d] %s: %d files, %d events",
            i,
            len(batches),
            batch.start,
            len(batch.files),
            len(df),
        )
        if job.data_type == "streaming":
            if "training" in job.tasks:
                _train(df, job, args, settings, summary)
            if "inference" in job.tasks:
                frames.append(_infer(df, job, args, settings, summary))
        else:
            frames.append(df)
    if job.data_type == "payload" and frames:
        raw = pd.concat(frames, ignore_index=True)[["_raw", "_file", "_index"]]
        states = _load_states(raw, job, settings) if infer else {}
        df = process(raw, job.source, states)
        _save_states(states, job, settings)
        frames = []
        if "training" in job.tasks:
            _train(df, job, args, settings, summary)
        if "inference" in job.tasks:
            frames.append(_infer(df, job, args, settings, summary))
    if "inference" in job.tasks:
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        default = Path(settings.run_dir) / "dfp" / f"detections_{job.source}.csv"
        path = str(args.output_file or default)
        if path in summary.outputs:  # a second inference job must not overwrite the first
            stem, dot, ext = path.rpartition(".")
            path = f"{stem}-{len(summary.outputs) + 1}.{ext}" if dot else f"{path}-2"
        summary.outputs.append(write_detections(out, path))


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments (Morpheus names kept)."""
    p = argparse.ArgumentParser(
        prog="python -m training.dfp_cli", description=__doc__.split("\n")[0]
    )
    p.add_argument("--source", choices=("duo", "azure"), default=None)
    p.add_argument(
        "--input_file",
        action="append",
        required=True,
        help="data files/globs or control-message files (repeatable)",
    )
    p.add_argument("--start_time", default=None, help="ISO time; files before it are skipped")
    p.add_argument("--duration", type=parse_duration, default=None, help="e.g. 60d")
    p.add_argument("--train_users", choices=TRAIN_USERS, default="all")
    p.add_argument("--skip_user", action="append", default=[])
    p.add_argument("--only_user", action="append", default=[])
    p.add_argument("--period", default="D", help="batch period (pandas frequency)")
    p.add_argument("--data_type", choices=("payload", "streaming"), default="payload")
    p.add_argument("--infer", action="store_true", help="data files: also score them")
    p.add_argument("--min_user_events", type=int, default=None)
    p.add_argument("--min_history", type=int, default=None)
    p.add_argument("--min_increment", type=int, default=300)
    p.add_argument("--max_history", default="60d")
    p.add_argument(
        "--cache_dir",
        type=Path,
        default=None,
        help="rolling-window cache (default <run_dir>/dfp-cache)",
    )
    p.add_argument("--epochs", type=int, default=None, help="max epochs (early stopping on)")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="flag mean_abs_z above this instead of the risk model's calibrated decision",
    )
    p.add_argument("--all_events", action="store_true", help="write every scored event")
    p.add_argument(
        "--output_file",
        default=None,
        help=".csv or .jsonl, fsspec URL allowed (default <run_dir>/dfp/detections_<source>.csv)",
    )
    p.add_argument("--log_level", default=None)
    return p


def require_mlflow(settings: Settings) -> None:
    """Fail at once when the MLflow server is down (its client would retry for minutes)."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("http") and not mlflow_ready(settings):
        raise ConnectionError(
            f"MLflow at {uri} is unreachable: models are trained into and loaded from its "
            "registry. Start it with `make up` or point SECML_MLFLOW_TRACKING_URI at a server."
        )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 1 on errors (messages name what is wrong)."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    logging.basicConfig(
        level=(args.log_level or settings.log_level).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    args.cache_dir = args.cache_dir or Path(settings.run_dir) / "dfp-cache"
    summary = Summary()
    started = time.perf_counter()
    try:
        jobs = jobs_from_args(args)
        if any(job.tasks for job in jobs):
            require_mlflow(settings)
        for job in jobs:
            run_job(job, args, settings, summary)
    except (ValueError, LookupError, OSError) as exc:  # bad input, no model, unreachable
        log.error("%s", exc)
        summary.errors.append(str(exc))
    except Exception as exc:  # e.g. an MLflow error: name it, keep the traceback for DEBUG
        log.error("%s: %s", type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        summary.errors.append(f"{type(exc).__name__}: {exc}")
    for line in summary.lines(time.perf_counter() - started):
        log.info("summary: %s", line)
    return 1 if summary.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
