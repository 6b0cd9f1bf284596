"""Soak benchmark: the live gateway at half its measured maximum rate, for minutes; p99 and RSS.

Starts its own Triton and gateway (free ports, temp run dir) through ``secml.stack``, serves an
ABP booster trained with the project's code on generated nvidia-smi data
(``secml.abp.generator``), and then, in one run:

1. measures the maximum rate: ``--concurrency`` clients posting ``POST /predict`` back to back
   for ``--max-seconds`` (closed loop, req/s);
2. soaks: requests sent at half that rate on a fixed schedule (open loop: a slow answer does
   not slow the sender) for ``--seconds`` (default 600);
3. prints p50/p99 of the first and last tenth of the soak and their ratio, and the resident
   memory (process and children) of the gateway and of Triton at the start and end of the soak
   and their growth ratio, against the issue's target (< 10% growth, p99 stable).

Run: ``.venv/bin/python -m bench.bench_soak [--seconds 600]`` (``make soak``; ``make bench``
runs it with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_serving import _load, _triton_pid, configure, rss_mib, train_abp  # noqa: E402


def bodies(records: list[dict], batch: int, n: int = 200) -> list[bytes]:
    """``n`` request bodies of ``batch`` generated nvidia-smi records each."""
    out = []
    for i in range(n):
        start = (i * batch) % max(1, len(records) - batch)
        body = {"detector": "abp", "source": "nvsmi", "records": records[start : start + batch]}
        out.append(json.dumps(body).encode())
    return out


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` in ms (nan when empty)."""
    if not values:
        return float("nan")
    v = sorted(values)
    return 1000 * v[min(len(v) - 1, int(len(v) * q))]


async def soak(
    url: str, payloads: list[bytes], headers: dict, rate: float, seconds: float,
    sample_rss: Any, max_in_flight: int = 256,
) -> dict[str, Any]:  # fmt: skip
    """Send at ``rate`` req/s for ``seconds`` on a fixed schedule; latencies by send time."""
    done: list[tuple[float, float, int]] = []  # (sent at, latency, status)
    rss: list[tuple[float, dict[str, float]]] = []
    skipped = 0
    in_flight: set[asyncio.Task] = set()
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=64)

    async def one(c: httpx.AsyncClient, body: bytes, sent: float) -> None:
        t = time.perf_counter()
        try:
            r = await c.post(url, content=body, headers=headers)
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        done.append((sent, time.perf_counter() - t, status))

    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        start = time.perf_counter()
        next_rss = start
        i = 0
        while (now := time.perf_counter()) - start < seconds:
            if now >= next_rss:
                rss.append((now - start, sample_rss()))
                next_rss += max(5.0, seconds / 60)
            due = start + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            if len(in_flight) >= max_in_flight:
                skipped += 1  # the server is far behind: count it, do not pile up
            else:
                task = asyncio.create_task(one(c, payloads[i % len(payloads)], due - start))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            i += 1
        await asyncio.gather(*in_flight)
        wall = time.perf_counter() - start
        rss.append((wall, sample_rss()))
    return {"done": done, "rss": rss, "skipped": skipped, "wall": wall, "sent": i}


def main() -> int:
    """Measure the max rate, soak at half of it, print latency and RSS at start vs end."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0, help="soak duration (default 600)")
    ap.add_argument("--max-seconds", type=float, default=20.0, help="max-rate measurement")
    ap.add_argument("--concurrency", type=int, default=8, help="clients for the max rate")
    ap.add_argument("--batch", type=int, default=8, help="records per request")
    ap.add_argument("--fraction", type=float, default=0.5, help="soak rate / max rate")
    args = ap.parse_args()
    run = configure()
    from secml.abp.model import save_booster
    from secml.repository import ABP_MODEL, copy_foundation
    from secml.settings import get_settings
    from secml.stack import Stack
    from serving.sync import write_abp_version

    s = get_settings()
    repo = s.triton_model_repository
    copy_foundation(ROOT / "triton_models", repo)
    booster, records = train_abp(run / "abp")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.ubj").write_bytes(save_booster(booster))
        write_abp_version(repo / ABP_MODEL, "abp-nvsmi-xgb", "1", Path(tmp))

    stack = Stack(s)
    stack.up(["triton", "gateway"])
    url = f"{s.gateway_url}/predict"
    headers = {"X-API-Key": s.gateway_api_key.get_secret_value(),
               "Content-Type": "application/json"}  # fmt: skip
    payloads = bodies(records, args.batch)
    pids = {"gateway": stack.pid("gateway"),
            "triton": stack.pid("triton") or _triton_pid(s.triton_http_port)}  # fmt: skip

    def sample_rss() -> dict[str, float]:
        return {k: rss_mib(p) if p else float("nan") for k, p in pids.items()}

    try:
        r = httpx.post(url, content=payloads[0], headers=headers, timeout=120)
        if r.status_code != 200:
            print(f"gateway answered {r.status_code}: {r.text[:500]}")
            return 1
        loop = asyncio.new_event_loop()
        _ = loop.run_until_complete(_load(url, payloads, headers, args.concurrency, 3.0))
        peak = loop.run_until_complete(
            _load(url, payloads, headers, args.concurrency, args.max_seconds)
        )
        rate = peak["rps"] * args.fraction
        print(f"## bench_soak: gateway POST /predict, ABP, {args.batch} records per request\n")
        print(f"- max rate ({args.concurrency} clients, closed loop, {args.max_seconds:.0f} s): "
              f"{peak['rps']:.1f} req/s, p50 {peak['p50_ms']:.1f} ms, p99 {peak['p99_ms']:.1f} ms, "
              f"{peak['errors']} errors")  # fmt: skip
        print(f"- soak: {rate:.1f} req/s ({args.fraction:.0%} of max) for {args.seconds:.0f} s, "
              "open loop")  # fmt: skip
        res = loop.run_until_complete(soak(url, payloads, headers, rate, args.seconds, sample_rss))
        loop.close()
    finally:
        stack.down(timeout_s=10)
        shutil.rmtree(run, ignore_errors=True)
    report(res, args.seconds)
    return 0


def report(res: dict[str, Any], seconds: float) -> None:
    """Print latency first vs last tenth, errors and RSS start vs end."""
    done = res["done"]
    ok = [lat for _, lat, st in done if st == 200]
    errors = sum(1 for *_, st in done if st != 200)
    tenth = seconds / 10
    first = [lat for t, lat, st in done if st == 200 and t < tenth]
    last = [lat for t, lat, st in done if st == 200 and t >= seconds - tenth]
    print(f"- sent {res['sent']} requests in {res['wall']:.0f} s "
          f"({res['sent'] / res['wall']:.1f} req/s), {len(ok)} answered 200, {errors} errors, "
          f"{res['skipped']} not sent (256 in flight)")  # fmt: skip
    print(f"- latency, whole soak: p50 {pct(ok, 0.5):.1f} ms, p99 {pct(ok, 0.99):.1f} ms")
    p99_first, p99_last = pct(first, 0.99), pct(last, 0.99)
    print(f"- first tenth: p50 {pct(first, 0.5):.1f} ms, p99 {p99_first:.1f} ms ({len(first)}); "
          f"last tenth: p50 {pct(last, 0.5):.1f} ms, p99 {p99_last:.1f} ms ({len(last)}); "
          f"p99 last/first {p99_last / p99_first:.3g}")  # fmt: skip
    tenths = [
        pct([lat for t, lat, st in done if st == 200 and k * tenth <= t < (k + 1) * tenth], 0.99)
        for k in range(10)
    ]
    print("- p99 per tenth (ms): " + " ".join(f"{v:.0f}" for v in tenths))
    rss = res["rss"]
    (_, start), (_, end) = rss[0], rss[-1]
    print("\n| process (+ children) | RSS start MiB | RSS end MiB | min | max | end/start |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    growth = {}
    for name in start:
        series = [sample[name] for _, sample in rss]
        growth[name] = end[name] / start[name]
        print(f"| {name} | {start[name]:.0f} | {end[name]:.0f} | {min(series):.0f} | "
              f"{max(series):.0f} | {growth[name]:.3f} |")  # fmt: skip
    worst = max(growth.values())
    print(f"\ntarget (issue 17): RSS growth < 10% -> worst {100 * (worst - 1):+.1f}% "
          f"({'met' if worst < 1.10 else 'NOT met'}); p99 last/first "
          f"{p99_last / p99_first:.3g}")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
