"""Serving benchmark: the gateway against in-process baselines measured in the same run.

Starts its own Triton and gateway (free ports, temp run dir) through ``secml.stack``, trains an
ABP booster and a DFP autoencoder (default architecture, few epochs) with the project's own
code, writes them into the Triton repository in the layout ``serving.sync`` produces, and prints:

- P1: ABP rows/s at batch 1024: gateway ``POST /predict`` and Triton direct (typed tensors) vs
  in-process ``features.to_matrix`` + ``model.score`` (medians of interleaved rounds).
- P2: ABP batch 1 at concurrency 8: gateway vs a bare FastAPI + XGBoost app (one thread per
  predict), req/s and p99, interleaved rounds.
- P3: DFP 256 records, one user and 100 mixed users: gateway rows/s vs a bare torch forward of
  the same rows (one forward per user group); the slowest request.
- the DFP LRU: 1,000 users behind one Triton model (``--users``), memory and latency.

Run: ``.venv/bin/python -m bench.bench_serving [--quick]`` (``make bench`` runs every benchmark).
Targets (issue 15): P1 >= 1/3, P2 >= 60% of req/s with p99 <= 3x, P3 >= 50% / 25%, < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
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

ROUNDS, QUICK_ROUNDS = 5, 2
PORT_NAMES = ("TRITON_HTTP", "TRITON_GRPC", "TRITON_METRICS", "GATEWAY")


def configure() -> Path:
    """Temp run dir and free ports in the environment, before secml settings are read."""
    from secml.stack.processes import free_ports

    run = Path(tempfile.mkdtemp(prefix="secml-bench-"))
    env = {
        "SECML_RUN_DIR": str(run),
        "SECML_TRITON_MODEL_REPOSITORY": str(run / "triton_models"),
        **{
            f"SECML_{name}_PORT": str(port)
            for name, port in zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True)
        },
        "SECML_LOG_LEVEL": "WARNING",
        # a busy shared machine: measure slow answers instead of turning them into 504s
        "SECML_TRITON_TIMEOUT_S": "300",
    }
    os.environ.update(env)
    return run


def rows_per_s(fn: Callable[[], None], rows: int, seconds: float) -> float:
    """Rows/s of ``fn`` (``rows`` per call) over at least one call and ~``seconds``."""
    n, start = 0, time.perf_counter()
    while n == 0 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return n * rows / (time.perf_counter() - start)


def interleaved(cells: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median of each cell's figure over ``rounds`` rounds, cells interleaved within a round."""
    got: dict[str, list[float]] = {k: [] for k in cells}
    for _ in range(rounds):
        for k, fn in cells.items():
            got[k].append(fn())
    return {k: statistics.median(v) for k, v in got.items()}


async def _load(url: str, bodies: list[bytes], headers: dict, conc: int, seconds: float) -> dict:
    """``conc`` clients posting ``bodies`` in turn for ``seconds``: req/s, p50, p99, errors."""
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(c: httpx.AsyncClient, k: int) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = await c.post(url, content=bodies[i % len(bodies)], headers=headers)
            lat.append(time.perf_counter() - t)
            errors += r.status_code != 200
            i += conc

    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        start = time.perf_counter()
        await asyncio.gather(*(worker(c, k) for k in range(conc)))
        wall = time.perf_counter() - start
    lat.sort()
    return {
        "rps": len(lat) / wall,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "errors": errors,
        "n": len(lat),
    }


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
    from secml.dfp.model import AutoEncoder, feature_config
    from secml.dfp.schema import process_records

    df = process_records(events, "duo")
    return AutoEncoder(feature_config("duo"), max_epochs=5).fit(df)


def publish(repo: Path, booster: Any, ae: Any, users: list[str]) -> None:
    """Write the models in serving.sync's layout (ABP version 2; DFP generic + users)."""
    from secml.abp.model import save_booster
    from secml.naming import user_to_model_name
    from secml.repository import ABP_MODEL, DFP_MODEL, INDEX_FILE, USERS_DIR, write_json_atomic
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
BARE_APP = """
import os
import numpy as np
import orjson
import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response
from secml.abp import features
from secml.abp.model import load_booster, score

booster = load_booster(os.environ["BENCH_BOOSTER"])
booster.set_param({"nthread": 1})
app = FastAPI()


def _score(raw: bytes) -> bytes:
    recs = orjson.loads(raw)["records"]
    p = score(booster, features.to_matrix(recs))
    return orjson.dumps({"results": [{"index": i, "score": float(s)} for i, s in enumerate(p)]})


@app.post("/predict")
async def predict(request: Request) -> Response:
    body = await request.body()
    return Response(await anyio.to_thread.run_sync(_score, body), media_type="application/json")
"""


def start_bare_app(run: Path, booster: Any) -> tuple[Any, str]:
    """The bare FastAPI + XGBoost app (P2's baseline) as a uvicorn process."""
    import subprocess

    from secml.abp.model import save_booster

    (run / "bare").mkdir()
    (run / "bare" / "bare_app.py").write_text(BARE_APP)
    (run / "bare" / "booster.ubj").write_bytes(save_booster(booster))
    from secml.stack.processes import free_port

    port = free_port()
    env = dict(os.environ, BENCH_BOOSTER=str(run / "bare" / "booster.ubj"), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = f"{run / 'bare'}:{ROOT}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--no-access-log",
         "--log-level", "warning"],
        env=env,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/docs", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the bare FastAPI app did not start")


def ratio_line(name: str, got: float, base: float, target: str) -> str:
    """One printed ratio."""
    return f"- {name}: {got:,.0f} vs {base:,.0f} = {got / base:.2f}x (target {target})"


def p1(s: Any, booster: Any, nvsmi: list[dict], rounds: int, loop: Any, triton: Any) -> None:
    """ABP rows/s at batch 1024: gateway and Triton direct vs in-process featurize + predict."""
    import orjson

    from secml.abp.features import to_matrix
    from secml.abp.model import score
    from serving.triton import fp32

    recs = (nvsmi * (1 + 1024 // len(nvsmi)))[:1024]
    body = orjson.dumps({"detector": "abp", "source": "nvsmi", "records": recs})
    headers = {
        "X-API-Key": s.gateway_api_key.get_secret_value(),
        "Content-Type": "application/json",
    }
    gw = httpx.Client(base_url=s.gateway_url or "", timeout=300, headers=headers)
    x = to_matrix(recs)

    def gateway() -> None:
        gw.post("/predict", content=body).raise_for_status()

    def direct() -> None:
        loop.run_until_complete(triton.infer("abp_nvsmi_xgb", [fp32("FEATURES", x)], ["SCORE"]))

    cells = {
        "in-process inplace_predict": lambda: rows_per_s(lambda: score(booster, x), 1024, 1.0),
        "in-process featurize + predict": lambda: rows_per_s(
            lambda: score(booster, to_matrix(recs)), 1024, 1.5
        ),
        "Triton direct (FP32 [-1,18], gRPC)": lambda: rows_per_s(direct, 1024, 1.5),
        "gateway POST /predict": lambda: rows_per_s(gateway, 1024, 3.0),
    }
    try:
        got = interleaved(cells, rounds)
        timing = gw.post("/predict", content=body).headers.get("server-timing", "")
    finally:
        gw.close()
    print(f"\n### P1: ABP rows/s at batch 1024 (medians of {rounds} interleaved rounds)\n")
    print("| path | rows/s |\n| --- | ---: |")
    for k, v in got.items():
        print(f"| {k} | {v:,.0f} |")
    base = got["in-process featurize + predict"]
    print()
    print(ratio_line("P1 gateway / in-process featurize+predict", got["gateway POST /predict"],
                     base, ">= 0.33"))  # fmt: skip
    print(f"- one gateway request, ms per step (Server-Timing): {timing}")


def p2(s: Any, bare_url: str, nvsmi: list[dict], rounds: int, seconds: float) -> None:
    """ABP batch 1 at concurrency 8: gateway vs the bare FastAPI + XGBoost app."""
    import orjson

    bodies = [
        orjson.dumps({"detector": "abp", "source": "nvsmi", "records": [r]}) for r in nvsmi[:200]
    ]
    headers = {
        "X-API-Key": s.gateway_api_key.get_secret_value(),
        "Content-Type": "application/json",
    }
    runs: dict[str, list[dict]] = {"gateway": [], "bare FastAPI + XGBoost": []}
    for _ in range(rounds):
        runs["gateway"].append(
            asyncio.run(_load(f"{s.gateway_url}/predict", bodies, headers, 8, seconds))
        )
        runs["bare FastAPI + XGBoost"].append(
            asyncio.run(_load(f"{bare_url}/predict", bodies, headers, 8, seconds))
        )
    med = {
        k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p50_ms", "p99_ms")}
        | {"errors": sum(r["errors"] for r in v), "n": sum(r["n"] for r in v)}
        for k, v in runs.items()
    }
    print(f"\n### P2: ABP batch 1, concurrency 8 ({rounds} interleaved rounds of {seconds:.0f}s)\n")
    print("| app | req/s | p50 ms | p99 ms | requests | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k, v in med.items():
        print(f"| {k} | {v['rps']:.0f} | {v['p50_ms']:.1f} | {v['p99_ms']:.1f} | {v['n']} | "
              f"{v['errors']} |")  # fmt: skip
    g, b = med["gateway"], med["bare FastAPI + XGBoost"]
    print()
    print(ratio_line("P2 gateway / bare req/s", g["rps"], b["rps"], ">= 0.60"))
    print(f"- P2 p99 gateway / bare: {g['p99_ms']:.1f} / {b['p99_ms']:.1f} ms = "
          f"{g['p99_ms'] / b['p99_ms']:.2f}x (target <= 3)")  # fmt: skip


def p3(s: Any, repo: Path, rounds: int, loop: Any, triton: Any) -> None:
    """DFP 256 records: gateway vs a bare torch forward, one user and 100 mixed users."""
    import orjson
    import torch

    from secml.dfp.model import AutoEncoder, find_model_dir
    from secml.dfp.schema import process_records
    from secml.dfp.serve import DfpScorer
    from serving.detectors import DETECTORS, DictRecords

    spec = DETECTORS[("dfp", "duo")]
    torch.set_num_threads(1)
    ae = AutoEncoder.load(find_model_dir(repo / "dfp" / "users" / "dfp-duo-generic" / "1"), "cpu")
    scorer = DfpScorer(repo / "dfp", threshold=s.dfp_z_threshold, device="cpu")
    headers = {
        "X-API-Key": s.gateway_api_key.get_secret_value(),
        "Content-Type": "application/json",
    }
    gw = httpx.Client(base_url=s.gateway_url or "", timeout=300, headers=headers)
    cases = {
        "one user": duo_events(["p3-one@example.com"], 256, seed=5),
        "100 mixed users": duo_events([f"user{i:04d}@example.com" for i in range(100)], 3, seed=6)[
            :256
        ],
    }
    print(f"\n### P3: DFP, 256 Duo records per request (medians of {rounds} interleaved rounds)\n")
    print("The bare forward is the autoencoder alone on encoded tensors, one forward per user "
          "group; in-process is `DfpScorer.score_records` (featurize + score in one process, "
          "no store); Triton direct sends the featurized tensors (gRPC); the gateway adds "
          "HTTP, featurizing, the users' stored states and storing anomalies.\n")  # fmt: skip
    timings: list[str] = []
    print("| case | bare torch forward rows/s | in-process featurize + score rows/s | "
          "Triton direct rows/s | gateway rows/s | gateway / bare | target | "
          "slowest gateway request s |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    try:
        for name, recs in cases.items():
            body = orjson.dumps({"detector": "dfp", "source": "duo", "records": recs})
            df = process_records(recs, "duo")
            groups = [g for _, g in df.groupby("username", sort=False)]
            tensors = [ae._encode(g) for g in groups]  # noqa: SLF001 - the bare forward's input
            assert ae.net is not None

            def forward(tensors: list = tensors) -> None:
                with torch.no_grad():
                    for x in tensors:  # one forward per user group, as the model would
                        ae.net(x.num, x.binary, x.cat)

            def in_process(recs: list = recs) -> None:
                scorer.score_records(recs, "duo", {})

            prepared = spec.prepare(DictRecords(recs))
            inputs, _ = spec.featurize(prepared, {})

            def direct(inputs: list = inputs, outputs: list = prepared.outputs) -> None:
                loop.run_until_complete(triton.infer("dfp", inputs, outputs))

            slowest = 0.0

            def gateway(body: bytes = body) -> None:
                nonlocal slowest
                t = time.perf_counter()
                gw.post("/predict", content=body).raise_for_status()
                slowest = max(slowest, time.perf_counter() - t)

            gateway()  # the first request loads the users' models
            slowest = 0.0
            got = interleaved(
                {
                    "gw": lambda g=gateway, n=len(recs): rows_per_s(g, n, 2.0),
                    "bare": lambda f=forward, n=len(recs): rows_per_s(f, n, 1.0),
                    "inproc": lambda f=in_process, n=len(recs): rows_per_s(f, n, 1.0),
                    "direct": lambda f=direct, n=len(recs): rows_per_s(f, n, 1.0),
                },
                rounds,
            )
            timing = gw.post("/predict", content=body).headers.get("server-timing", "")
            target = ">= 0.50" if name == "one user" else ">= 0.25"
            print(f"| {name} | {got['bare']:,.0f} | {got['inproc']:,.0f} | {got['direct']:,.0f} | "
                  f"{got['gw']:,.0f} | "
                  f"{got['gw'] / got['bare']:.3f}x | {target}, slowest < 1 s | "
                  f"{slowest:.3f} |")  # fmt: skip
            timings.append(f"- {name}, ms per step (Server-Timing): {timing}")
    finally:
        gw.close()
    print("\n" + "\n".join(timings))


def main() -> int:
    """Run P1, P2, P3 and the DFP LRU cell; print the tables and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (smoke run)")
    ap.add_argument("--users", type=int, default=1000, help="DFP users for the LRU cell (0: skip)")
    ap.add_argument(
        "--only", nargs="+", choices=("p1", "p2", "p3", "lru"), help="run only these cells"
    )
    args = ap.parse_args()
    only = set(args.only or ("p1", "p2", "p3", "lru"))
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    run = configure()
    from secml.repository import copy_foundation
    from secml.settings import get_settings
    from secml.stack import Stack
    from serving.triton import TritonClient

    s = get_settings()
    repo = s.triton_model_repository
    copy_foundation(ROOT / "triton_models", repo)

    t = time.perf_counter()
    booster, nvsmi = train_abp(run / "abp")
    lru_users = [f"user{i:04d}@example.com" for i in range(max(args.users, 100))]
    ae = train_dfp(duo_events([f"train{i}@example.com" for i in range(20)], 60, seed=1))
    publish(repo, booster, ae, lru_users)
    print(f"trained and published models in {time.perf_counter() - t:.0f}s (run dir {run})")
    print(f"settings: serving_xgb_threads={s.serving_xgb_threads} "
          f"serving_torch_threads={s.serving_torch_threads}, {os.cpu_count()} cores")  # fmt: skip

    stack = Stack(s)
    stack.up(["triton", "gateway"])
    bare, bare_url = start_bare_app(run, booster)
    loop = asyncio.new_event_loop()
    triton = TritonClient(s.triton_grpc_url or "", timeout_s=300)
    try:
        if "p1" in only:
            p1(s, booster, nvsmi, rounds, loop, triton)
        if "p2" in only:
            p2(s, bare_url, nvsmi, rounds, 3.0 if args.quick else 6.0)
        if "p3" in only:
            p3(s, repo, rounds, loop, triton)
        if args.users and "lru" in only:
            lru(s, stack, repo, lru_users, loop, triton)
    finally:
        bare.terminate()
        bare.wait(timeout=10)
        loop.run_until_complete(triton.aclose())
        loop.close()
        stack.down(timeout_s=10)
        shutil.rmtree(run, ignore_errors=True)
    return 0


def lru(s: Any, stack: Any, repo: Path, users: list[str], loop: Any, triton: Any) -> None:
    """1,000 users behind one Triton model: cached vs evicted users, memory."""
    pid = stack.pid("triton") or _triton_pid(s.triton_http_port)
    before = rss_mib(pid) if pid else float("nan")
    cache = s.dfp_model_cache_size

    from serving.detectors import DETECTORS, DictRecords

    spec = DETECTORS[("dfp", "duo")]

    def cell(group: list[str], rounds: int) -> dict[str, float]:
        lat = []
        for r in range(rounds):
            for i in range(0, len(group), 64):
                prepared = spec.prepare(DictRecords(duo_events(group[i : i + 64], 1, seed=r)))
                inputs, _ = spec.featurize(prepared, {})
                t0 = time.perf_counter()
                loop.run_until_complete(triton.infer("dfp", inputs, prepared.outputs))
                lat.append(time.perf_counter() - t0)
        lat.sort()
        return {
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "n": len(lat),
        }

    hot = users[: min(cache // 2, len(users))]
    cell(hot, 1)  # load them
    warm = cell(hot, 3)
    cold = cell(users, 1)  # > cache: every batch loads models from disk
    after = rss_mib(pid) if pid else float("nan")
    one = sum(
        f.stat().st_size for f in (repo / "dfp" / "users" / "dfp-duo-generic" / "1").iterdir()
    )
    print(f"\n### DFP with {len(users)} users in one Triton model (LRU {cache})\n")
    print(f"- model files per user: {one / 2**20:.2f} MiB; on disk for all: "
          f"{one * (len(users) + 1) / 2**30:.2f} GiB")  # fmt: skip
    print(f"- Triton RSS (server + python stubs): {before:.0f} MiB before, {after:.0f} MiB after "
          f"touching all {len(users)} users")  # fmt: skip
    print(f"- 64-event batches of 64 cached users: p50 {warm['p50_ms']:.1f} ms, "
          f"p99 {warm['p99_ms']:.1f} ms ({warm['n']} requests)")  # fmt: skip
    print(f"- 64-event batches of 64 uncached users (loaded from disk): p50 "
          f"{cold['p50_ms']:.1f} ms, p99 {cold['p99_ms']:.1f} ms "
          f"({cold['n']} requests)")  # fmt: skip


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
