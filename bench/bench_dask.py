"""Per-user DFP training on a Dask LocalCluster: users trained per second at 1, 2 and 4 workers.

The per-user loop of ``dfp-train`` is embarrassingly parallel: each user's autoencoder is fitted
on that user's rows alone. This benchmark fits ``--users`` generated users' models (the same
``AutoEncoder(feature_config(source))`` and one torch thread per worker, as ``dfp-train``'s
per-user task does, without the MLflow logging) on a ``distributed.LocalCluster`` of 1, 2 and 4
single-threaded worker processes, with each user's rows already on the cluster and torch
imported on every worker before the clock starts. Ratios are against 1 worker in the same run.
On a machine with fewer free cores than workers the ratio stops growing; the table prints the
cores this process may use and the cores the cluster actually got (the tasks' CPU seconds per wall
second), which tells a busy machine from a serial bottleneck.

    python -m bench.bench_dask --users 100 --epochs 5 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import pandas as pd


def users_frames(source: str, users: int, days: int, seed: int) -> list[pd.DataFrame]:
    """One processed frame per generated user (every user, however few rows)."""
    from secml.dfp.generator import generate
    from secml.dfp.schema import process_records

    gen = generate(source, n_users=users, days=days, n_attacks=0, sparse_fraction=0.0, seed=seed)
    df = process_records(gen.records, source)
    return [g.reset_index(drop=True) for _, g in df.groupby("username", sort=True)]


def fit_user(df: pd.DataFrame, source: str, epochs: int, small: bool) -> tuple[float, float]:
    """Fit one user's autoencoder (one torch thread); its validation loss and CPU seconds."""
    import torch

    from secml.dfp.model import AutoEncoder, feature_config

    torch.set_num_threads(1)
    extra: dict[str, Any] = {"encoder_layers": [64, 32], "decoder_layers": [64]} if small else {}
    model = AutoEncoder(feature_config(source), max_epochs=epochs, patience=epochs, **extra)
    cpu = time.process_time()
    model.fit(df)
    return float(model.val_loss), time.process_time() - cpu


def _warm() -> None:
    import torch  # noqa: F401

    import secml.dfp.model  # noqa: F401


def time_workers(
    frames: list[pd.DataFrame], workers: int, args: argparse.Namespace
) -> tuple[float, float]:
    """Wall seconds to fit every user's model on ``workers`` processes, and the tasks' CPU s."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                     dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.run(_warm)
        remote = client.scatter(frames, broadcast=False)
        t0 = time.perf_counter()
        futs = client.map(fit_user, remote, source=args.source, epochs=args.epochs,
                          small=args.small, pure=False)  # fmt: skip
        results = client.gather(futs)
        elapsed = time.perf_counter() - t0
    assert len(results) == len(frames)
    return elapsed, sum(cpu for _, cpu in results)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the users, time each worker count, return the figures."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    frames = users_frames(args.source, args.users, args.days, args.seed)
    rows = [len(f) for f in frames]
    out: dict[str, Any] = {"source": args.source, "users": len(frames), "rows": sum(rows),
                           "rows_per_user_median": int(pd.Series(rows).median()),
                           "epochs": args.epochs, "small": args.small,
                           "cpus_available": len(os.sched_getaffinity(0)),
                           "workers": {}}  # fmt: skip
    for w in args.workers:
        secs, cpu = time_workers(frames, w, args)
        # CPU seconds the tasks got per wall second: the cores the cluster actually used
        out["workers"][str(w)] = {"seconds": round(secs, 2), "task_cpu_s": round(cpu, 2),
                                  "cores_used": round(cpu / secs, 2),
                                  "users_per_s": round(len(frames) / secs, 3)}  # fmt: skip
    base = out["workers"][str(args.workers[0])]["seconds"]
    for w in args.workers:
        out["workers"][str(w)]["speedup_vs_first"] = round(
            base / out["workers"][str(w)]["seconds"], 2
        )
    return out


def main() -> None:
    """Parse arguments, run, print a table and the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=["duo", "azure"], default="duo")
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--days", type=int, default=25, help="days of logs (~300+ rows per user)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--small", action="store_true", help="64/32 layers instead of 512/500")
    p.add_argument("--seed", type=int, default=42)
    res = run(p.parse_args())
    print(f"DFP per-user training on Dask: {res['users']} users, {res['rows']} rows "
          f"(median {res['rows_per_user_median']}/user), {res['epochs']} epochs, "
          f"{res['cpus_available']} CPUs available to this process")  # fmt: skip
    for w, r in res["workers"].items():
        print(f"  {w:>2} worker(s)  {r['seconds']:>8.2f} s  {r['users_per_s']:>7.3f} users/s"
              f"  cores used {r['cores_used']:.2f}"
              f"  speedup vs {res['workers'] and next(iter(res['workers']))} worker(s) "
              f"{r['speedup_vs_first']:.2f}x")  # fmt: skip
    print(json.dumps(res))


if __name__ == "__main__":
    main()
