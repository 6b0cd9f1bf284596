"""DFP benchmark: per-user training time with the history features vs Morpheus's columns alone.

Issue 13 allows per-user training to cost at most 2x what it did before the history features
(``secml.dfp.history``) joined the autoencoder's inputs. Both configurations train on the same
users' events in the same run, with early stopping off so both run the same epochs; it also
prints the featurizer's throughput (events/s through ``schema.process`` with a state).

    python -m bench.bench_dfp_features [--users 8] [--epochs 10] [--source duo]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from secml.dfp.generator import generate
from secml.dfp.model import AutoEncoder, AutoEncoderConfig, feature_config
from secml.dfp.schema import FEATURES, process_records

# Morpheus's DFP columns: what every autoencoder was trained on before the history features.
MORPHEUS = {
    "duo": (
        ["accessdevicebrowser", "accessdeviceos", "authdevicename", "reason"],
        ["logcount", "locincrement"],
        ["result"],
    ),
    "azure": (
        [c for c in FEATURES["azure"].categorical],
        ["appincrement", "locincrement", "logcount"],
        [],
    ),
}


def main() -> None:
    """Run and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", type=int, default=8)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--source", choices=("duo", "azure"), default="duo")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = generate(
        args.source, n_users=args.users, days=30, n_attacks=0, sparse_fraction=0.0, seed=args.seed
    )
    t0 = time.perf_counter()
    df = process_records(gen.records, args.source, {})
    feat_s = time.perf_counter() - t0
    cat, num, binary = MORPHEUS[args.source]
    configs = {
        "morpheus columns": AutoEncoderConfig(categorical=cat, numeric=num, binary=binary),
        "with history": feature_config(args.source),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    for user, rows in df.groupby("username"):
        for name, cfg in configs.items():  # interleaved: the same load on both
            model = AutoEncoder(cfg, max_epochs=args.epochs, patience=args.epochs + 1)
            t = time.perf_counter()
            model.fit(rows)
            times[name].append((time.perf_counter() - t) / len(rows) * 1000)
        print(f"  {user}: {len(rows)} rows")
    base = statistics.median(times["morpheus columns"])
    print(f"featurize: {len(df) / feat_s:,.0f} events/s ({len(df)} events, history state)")
    print(f"per-user training, {args.epochs} epochs, median ms per row over {args.users} users:")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:18s} {m:7.3f} ms/row   ratio {m / base:4.2f}x")


if __name__ == "__main__":
    main()
