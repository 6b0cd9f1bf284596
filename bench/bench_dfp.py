"""DFP benchmark: per-user training (row-epochs/s) and inference (events/s), pipeline vs bare.

Both sides run in the same process on the same tensors and the same network:

* training: ``AutoEncoder.fit`` (encoding, validation split, swap noise, per-epoch validation,
  loss statistics) against a bare loop of forward/backward/Adam over the pre-encoded tensors
  with the same swap noise; early stopping is disabled so both run the same epochs;
* inference: ``secml.dfp.infer.score_events`` (per-user model lookup through the registry
  cache, encoding, z-scores, predictions, frame assembly) and ``AutoEncoder.score`` against a
  bare ``no_grad`` forward + per-feature losses over the pre-encoded tensors.

Optionally (``--mlflow URI``) it also times ``train_user`` end to end (fit + MLflow logging +
registration + gate). Ratios are pipeline / bare throughput (1.0 = no overhead).

    python -m bench.bench_dfp --rows 4000 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from secml.dfp.generator import generate
from secml.dfp.infer import score_events
from secml.dfp.model import AutoEncoder, feature_config
from secml.dfp.registry import ModelRegistry
from secml.dfp.schema import process_records
from secml.naming import user_to_model_name
from secml.settings import Settings


def events(source: str, rows: int, users: int, seed: int) -> pd.DataFrame:
    """At least ``rows`` processed events of ``users`` generated users (trimmed to ``rows``)."""
    days = max(2, int(np.ceil(rows / max(1, users) / 12)))
    gen = generate(source, n_users=users, days=days, n_attacks=0, sparse_fraction=0.0, seed=seed)
    df = process_records(gen.records, source)
    if len(df) < rows:
        raise SystemExit(f"generated only {len(df)} events, wanted {rows}")
    return df.iloc[:rows].reset_index(drop=True)


def bare_train(model: AutoEncoder, df: pd.DataFrame, epochs: int) -> float:
    """Seconds for a bare training loop on pre-encoded tensors (same net, noise, optimiser)."""
    cfg = model.config
    model._fit_encoders(df)
    model._build()
    x = model._encode(df).to(model.device)
    gen = torch.Generator(device=model.device)
    gen.manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.net.parameters(), lr=cfg.lr)
    n = len(x)
    _sync(model.device)
    t0 = time.perf_counter()
    model.net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen, device=model.device)
        for i in range(0, n, cfg.batch_size):
            target = x.rows(perm[i : i + cfg.batch_size])
            loss = model._feature_losses(model._swap_noise(target, gen), target).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    _sync(model.device)
    return time.perf_counter() - t0


def bare_infer(model: AutoEncoder, df: pd.DataFrame, repeat: int) -> float:
    """Seconds per pass of a bare no_grad forward + per-feature losses on pre-encoded tensors."""
    x = model._encode(df).to(model.device)
    model.net.eval()
    with torch.no_grad():
        model._feature_losses(x, x)  # warm-up
        _sync(model.device)
        t0 = time.perf_counter()
        for _ in range(repeat):
            model._feature_losses(x, x)
        _sync(model.device)
    return (time.perf_counter() - t0) / repeat


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work so timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Any, repeat: int = 1) -> float:
    """Mean seconds per call of ``fn`` (after one warm-up call)."""
    fn()
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement and return the figures."""
    torch.manual_seed(args.seed)
    df = events(args.source, args.rows, args.users, args.seed)
    cfg = feature_config(args.source)
    params = {"max_epochs": args.epochs, "patience": args.epochs + 1, "device": args.device}
    if args.small:
        params |= {"encoder_layers": [64, 32], "decoder_layers": [64]}
    model = AutoEncoder(cfg, **params)
    # pipeline fit trains on (1 - val_fraction) of the rows; count those row-epochs
    train_rows = len(df) - max(1, round(len(df) * model.config.val_fraction))

    t0 = time.perf_counter()
    model.fit(df)
    _sync(model.device)
    fit_s = time.perf_counter() - t0
    bare = AutoEncoder(cfg, **params)
    bare_s = bare_train(bare, df.sample(n=train_rows, random_state=0), args.epochs)
    fit_rate = train_rows * model.epochs_trained / fit_s
    bare_rate = train_rows * args.epochs / bare_s

    name = user_to_model_name(args.source, "generic")
    reg = ModelRegistry(
        args.source, loader=lambda n, v: model, settings=Settings(mlflow_tracking_uri="http://x")
    )
    reg._fetch_listing = lambda: {name: "1"}  # type: ignore[method-assign]
    pipe_s = _timed(lambda: score_events(df, args.source, reg), args.repeat)
    score_s = _timed(lambda: model.score(df), args.repeat)
    bare_inf_s = bare_infer(model, df, args.repeat)

    out: dict[str, Any] = {
        "source": args.source,
        "rows": len(df),
        "users_in_frame": int(df["username"].nunique()),
        "epochs": model.epochs_trained,
        "layers": [model.config.encoder_layers, model.config.decoder_layers],
        "device": str(model.device),
        "torch_threads": torch.get_num_threads(),
        "train_row_epochs_per_s": {
            "pipeline_fit": round(fit_rate, 1),
            "bare_loop": round(bare_rate, 1),
            "ratio": round(fit_rate / bare_rate, 3),
        },
        "infer_events_per_s": {
            "score_events": round(len(df) / pipe_s, 1),
            "model_score": round(len(df) / score_s, 1),
            "bare_forward": round(len(df) / bare_inf_s, 1),
            "ratio_score_events": round(bare_inf_s / pipe_s, 3),
            "ratio_model_score": round(bare_inf_s / score_s, 3),
        },
    }
    if args.mlflow:
        from secml.dfp.train import train_user

        settings = Settings(mlflow_tracking_uri=args.mlflow)
        t0 = time.perf_counter()
        train_user(df, args.source, f"bench-{int(time.time())}", params, settings)
        e2e = time.perf_counter() - t0
        out["train_row_epochs_per_s"]["train_user_mlflow"] = round(
            train_rows * model.epochs_trained / e2e, 1
        )
        out["train_row_epochs_per_s"]["ratio_train_user"] = round(
            train_rows * model.epochs_trained / e2e / bare_rate, 3
        )
    return out


def main() -> None:
    """Parse arguments, run, print a table and the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", choices=["duo", "azure"], default="duo")
    p.add_argument("--rows", type=int, default=4000)
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--small", action="store_true", help="64/32 layers instead of 512/500")
    p.add_argument("--mlflow", default=None, help="tracking URI: also time train_user end to end")
    p.add_argument("--seed", type=int, default=42)
    res = run(p.parse_args())
    t, i = res["train_row_epochs_per_s"], res["infer_events_per_s"]
    print(f"DFP bench: {res['rows']} {res['source']} rows, {res['epochs']} epochs, {res['device']}")
    print(
        f"  training  row-epochs/s  pipeline {t['pipeline_fit']:>10}  bare {t['bare_loop']:>10}"
        f"  ratio {t['ratio']}"
    )
    if "train_user_mlflow" in t:
        print(
            f"  train_user + MLflow     {t['train_user_mlflow']:>10}  ratio {t['ratio_train_user']}"
        )
    print(
        f"  inference events/s      score_events {i['score_events']:>10}  model.score "
        f"{i['model_score']:>10}  bare {i['bare_forward']:>10}"
    )
    print(
        f"  ratios (pipeline/bare)  score_events {i['ratio_score_events']}  "
        f"model.score {i['ratio_model_score']}"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
