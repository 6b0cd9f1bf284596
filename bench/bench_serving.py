"""Serving benchmark: gateway vs straight-to-Triton vs in-process, ABP and DFP, in one run.

Starts its own Triton and gateway (free ports, temp run dir) through ``secml.stack``, trains a
small ABP booster and a DFP autoencoder (default architecture, few epochs) with the project's
own code, writes them into the Triton repository in the layout ``serving.sync`` produces, and
measures requests/s, rows/s, p50 and p99 latency at batch 1, 64 and 1024 for each path, with
the ratios. Then serves 1,000 DFP users from one ``dfp`` model (LRU of user models) and reports
the memory of the Triton model process and the latency of cached vs evicted users.

Run: ``.venv/bin/python bench/bench_serving.py [--quick]``. Sequential requests from one client;
each cell stops after its iteration count or its time budget, whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BATCHES = (1, 64, 1024)
# batch -> (max iterations, time budget in seconds) per cell
BUDGET = {1: (300, 8.0), 64: (100, 8.0), 1024: (20, 12.0)}
QUICK = {1: (60, 3.0), 64: (20, 3.0), 1024: (4, 5.0)}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def configure() -> Path:
    """Temp run dir and free ports in the environment, before secml settings are read."""
    run = Path(tempfile.mkdtemp(prefix="secml-bench-"))
    env = {
        "SECML_RUN_DIR": str(run),
        "SECML_TRITON_MODEL_REPOSITORY": str(run / "triton_models"),
        "SECML_TRITON_HTTP_PORT": str(free_port()),
        "SECML_TRITON_GRPC_PORT": str(free_port()),
        "SECML_TRITON_METRICS_PORT": str(free_port()),
        "SECML_GATEWAY_PORT": str(free_port()),
        "SECML_LOG_LEVEL": "WARNING",
        # a busy shared machine: measure slow answers instead of turning them into 504s
        "SECML_TRITON_TIMEOUT_S": "300",
    }
    os.environ.update(env)
    return run


def measure(fn: Callable[[], None], batch: int, budget: dict) -> dict[str, float]:
    """Run ``fn`` repeatedly (after 2 warm-ups); latency percentiles and throughput."""
    iters, seconds = budget[batch]
    for _ in range(2):
        fn()
    lat = []
    start = time.perf_counter()
    while len(lat) < iters and time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    total = sum(lat)
    lat.sort()
    return {
        "n": len(lat),
        "rps": len(lat) / total,
        "rows_s": len(lat) * batch / total,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


def table(title: str, results: dict[tuple[str, int], dict[str, float]]) -> None:
    """Print one markdown table plus the ratios to in-process."""
    print(f"\n### {title}\n")
    print("| path | batch | req/s | rows/s | p50 ms | p99 ms | p50 vs in-process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (path, batch), r in results.items():
        base = results[("in-process", batch)]["p50_ms"]
        print(
            f"| {path} | {batch} | {r['rps']:.1f} | {r['rows_s']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['p50_ms'] / base:.1f}x |"
        )


# ---------------------------------------------------------------------------------- models
def train_abp(data_dir: Path) -> tuple[Any, list[dict]]:
    """A booster with the flow's default hyper-parameters on generated nvidia-smi data."""
    from secml.abp import model as m
    from secml.abp.generator import generate

    data, labels = generate(data_dir, gpus=12, hours=0.5, seed=3, interval_s=10)
    records = m.read_jsonlines(str(data))
    ds, _ = m.build_dataset(records, m.read_labels(str(labels)))
    return m.train(ds, m.TrainParams()), records


def duo_events(users: list[str], per_user: int, seed: int) -> list[dict]:
    """Raw Duo records for ``users`` (one device and city each, a few days)."""
    from secml.dfp.generator import duo_record

    rng = random.Random(seed)
    t0 = datetime(2022, 8, 1, 8, tzinfo=UTC)
    browsers, oses = ("Chrome", "Firefox", "Edge", "Safari"), ("Windows", "Mac OS X", "iOS")
    cities = (("Ann Arbor", "Michigan", "US"), ("Berlin", "Berlin", "DE"), ("Pune", "MH", "IN"))
    out = []
    for u, user in enumerate(users):
        for i in range(per_user):
            ok = rng.random() > 0.1
            city, state, country = cities[u % 3]
            out.append(
                duo_record(
                    user=user,
                    when=t0 + timedelta(hours=5 * i + rng.random()),
                    browser=browsers[u % 4],
                    os=oses[u % 3],
                    auth_device=f"phone-{u}",
                    city=city,
                    state=state,
                    country=country,
                    result="success" if ok else "denied",
                    reason="user_approved" if ok else "no_response",
                    rng=rng,
                )
            )
    return out


def train_dfp(events: list[dict]) -> Any:
    """An autoencoder with the default architecture ([512, 500] / [512]), few epochs."""
    from secml.dfp.model import AutoEncoder
    from secml.dfp.schema import process_records
    from secml.dfp.train import feature_config

    df = process_records(events, "duo")
    return AutoEncoder(feature_config("duo"), max_epochs=5).fit(df)


def publish(repo: Path, booster: Any, ae: Any, users: list[str]) -> None:
    """Write the models in serving.sync's layout (ABP version 2; DFP generic + users)."""
    from secml.abp.model import save_booster
    from secml.naming import user_to_model_name
    from serving.repository import ABP_MODEL, DFP_MODEL, INDEX_FILE, USERS_DIR, write_json_atomic
    from serving.sync import write_abp_version

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.ubj").write_bytes(save_booster(booster))
        write_abp_version(repo / ABP_MODEL, "abp-nvsmi-xgb", "1", Path(tmp))
    dfp = repo / DFP_MODEL / USERS_DIR
    src = ae.save(dfp / "dfp-duo-generic" / "1")
    index = {"dfp-duo-generic": "1"}
    for user in users:
        name = user_to_model_name("duo", user)
        shutil.copytree(src, dfp / name / "1")
        index[name] = "1"
    write_json_atomic(dfp / INDEX_FILE, {"models": index})


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, MiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            todo.extend(int(c) for c in children)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


# ---------------------------------------------------------------------------------- main
def main() -> int:
    """Run every cell and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller budgets (CI smoke run)")
    ap.add_argument("--users", type=int, default=1000, help="DFP users for the LRU test")
    args = ap.parse_args()
    budget = QUICK if args.quick else BUDGET
    run = configure()
    from secml.settings import get_settings
    from secml.stack import Stack
    from serving.repository import DfpScorer
    from serving.triton import TritonClient, bytes_column

    s = get_settings()
    repo = s.triton_model_repository
    shutil.copytree(ROOT / "triton_models", repo, ignore=shutil.ignore_patterns("__pycache__"))
    for model in repo.iterdir():
        for v in model.iterdir():
            if v.is_dir() and v.name.isdigit() and v.name != "1":
                shutil.rmtree(v)
    shutil.rmtree(repo / "dfp" / "users", ignore_errors=True)

    t = time.perf_counter()
    booster, nvsmi = train_abp(run / "abp")
    lru_users = [f"user{i:04d}@example.com" for i in range(args.users)]
    ae = train_dfp(duo_events([f"train{i}@example.com" for i in range(20)], 60, seed=1))
    publish(repo, booster, ae, lru_users)
    print(f"trained and published models in {time.perf_counter() - t:.0f}s (run dir {run})")

    stack = Stack(s)
    stack.up(["triton", "gateway"])
    loop = asyncio.new_event_loop()
    triton = TritonClient(s.triton_url or "", timeout_s=300)
    gw = httpx.Client(
        base_url=s.gateway_url or "",
        timeout=300,
        headers={"X-API-Key": s.gateway_api_key.get_secret_value()},
    )
    try:
        from secml.abp.model import predict

        abp: dict[tuple[str, int], dict[str, float]] = {}
        for batch in BATCHES:
            recs = (nvsmi * (1 + batch // len(nvsmi)))[:batch]
            payload = [json.dumps(r) for r in recs]
            body = {"detector": "abp", "source": "nvsmi", "records": recs}

            def via_gateway(body: dict = body) -> None:
                gw.post("/predict", json=body).raise_for_status()

            def via_triton(payload: list[str] = payload) -> None:
                loop.run_until_complete(
                    triton.infer("abp_nvsmi_xgb", [bytes_column("RECORDS", payload)], ["RESULT"])
                )

            abp[("gateway", batch)] = measure(via_gateway, batch, budget)
            abp[("triton", batch)] = measure(via_triton, batch, budget)
            abp[("in-process", batch)] = measure(lambda r=recs: predict(booster, r), batch, budget)
        table("ABP (abp-nvsmi-xgb, 200 trees, depth 6)", abp)

        scorer = DfpScorer(repo / "dfp", threshold=s.dfp_z_threshold)
        pool = duo_events(lru_users[:64], 16, seed=2)
        warm_payload = [json.dumps(r) for r in pool[:64]]
        loop.run_until_complete(
            triton.infer(
                "dfp",
                [
                    bytes_column("RECORDS", warm_payload),
                    bytes_column("SOURCE", ["duo"] * len(warm_payload)),
                ],
                ["RESULT"],
            )
        )
        dfp: dict[tuple[str, int], dict[str, float]] = {}
        for batch in BATCHES:
            recs = pool[:batch] if batch > 1 else pool[:1]
            payload = [json.dumps(r) for r in recs]
            body = {"detector": "dfp", "source": "duo", "records": recs}

            def via_gateway(body: dict = body) -> None:
                gw.post("/predict", json=body).raise_for_status()

            def via_triton(payload: list[str] = payload) -> None:
                inputs = [
                    bytes_column("RECORDS", payload),
                    bytes_column("SOURCE", ["duo"] * len(payload)),
                ]
                loop.run_until_complete(triton.infer("dfp", inputs, ["RESULT"]))

            dfp[("gateway", batch)] = measure(via_gateway, batch, budget)
            dfp[("triton", batch)] = measure(via_triton, batch, budget)
            dfp[("in-process", batch)] = measure(
                lambda r=recs: scorer.score_records(r, "duo"), batch, budget
            )
        table("DFP (duo, per-user autoencoders [512,500]/[512], events of up to 64 users)", dfp)

        # 1,000 users behind one Triton model: cached vs evicted users, memory
        pid = stack.pid("triton") or _triton_pid(s.triton_http_port)
        before = rss_mib(pid) if pid else float("nan")
        cache = s.dfp_model_cache_size

        def lru_cell(users: list[str], rounds: int) -> dict[str, float]:
            lat = []
            for r in range(rounds):
                for i in range(0, len(users), 64):
                    recs = duo_events(users[i : i + 64], 1, seed=r)
                    payload = [json.dumps(x) for x in recs]
                    inputs = [
                        bytes_column("RECORDS", payload),
                        bytes_column("SOURCE", ["duo"] * len(payload)),
                    ]
                    t0 = time.perf_counter()
                    loop.run_until_complete(triton.infer("dfp", inputs, ["RESULT"]))
                    lat.append(time.perf_counter() - t0)
            lat.sort()
            return {
                "p50_ms": 1000 * statistics.median(lat),
                "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
                "n": len(lat),
            }

        hot = lru_users[: min(cache // 2, len(lru_users))]
        lru_cell(hot, 1)  # load them
        warm = lru_cell(hot, 3)
        cold = lru_cell(lru_users, 1)  # > cache: every batch loads models from disk
        after = rss_mib(pid) if pid else float("nan")
        one = sum(
            f.stat().st_size for f in (repo / "dfp" / "users" / "dfp-duo-generic" / "1").iterdir()
        )
        print(f"\n### DFP with {len(lru_users)} users in one Triton model (LRU {cache})\n")
        print(
            f"- model files per user: {one / 2**20:.2f} MiB; on disk for all: "
            f"{one * (len(lru_users) + 1) / 2**30:.2f} GiB"
        )
        print(
            f"- Triton RSS (server + python stubs): {before:.0f} MiB after the latency runs, "
            f"{after:.0f} MiB after touching all {len(lru_users)} users"
        )
        print(
            f"- 64-event batches of 64 distinct cached users: p50 {warm['p50_ms']:.1f} ms, "
            f"p99 {warm['p99_ms']:.1f} ms ({warm['n']} requests)"
        )
        print(
            f"- 64-event batches of 64 distinct uncached users (loaded from disk): p50 "
            f"{cold['p50_ms']:.1f} ms, p99 {cold['p99_ms']:.1f} ms ({cold['n']} requests)"
        )
    finally:
        gw.close()
        loop.run_until_complete(triton.aclose())
        loop.close()
        stack.down(timeout_s=10)
        shutil.rmtree(run, ignore_errors=True)
    return 0


def _triton_pid(port: int) -> int | None:
    """PID of the tritonserver listening on ``port`` (from /proc)."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"tritonserver") and str(port).encode() in cmd:
            return int(p.name)
    return None


if __name__ == "__main__":
    raise SystemExit(main())
