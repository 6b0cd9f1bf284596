"""Idle cost of the control-message consumer: CPU% over an idle window, then reaction time.

Starts a private broker (noida-db, through :class:`secml.stack.Stack`) on a free port in a
temporary run directory, then ``python -m training.consumer`` as its own process with the same
``SECML_*`` environment ``make up`` gives it (no Prefect server is needed: an idle consumer never
calls it, and the message sent at the end is malformed, so it is dead-lettered, not dispatched).
Waits until the consumer's metrics answer and a few seconds more for the group to settle, then
reads the consumer's (and the broker's) CPU time from ``/proc`` over ``--seconds`` of idleness
and prints it as a percentage of one core. Finally it publishes one malformed message and
prints how long the consumer took to dead-letter it (its reaction time when woken from idle).

Usage: ``python -m bench.bench_idle --seconds 20``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from secml.settings import ROOT, Settings
from secml.stack import VENV_BIN, Stack, child_env, free_ports, group_stats

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds used so far by every live process in the process group ``pgid``."""
    return sum(int(f[11]) + int(f[12]) for f in group_stats(pgid)) / TICKS


def _metric(s: Settings, name: str) -> float | None:
    try:
        r = httpx.get(f"http://{s.host}:{s.consumer_metrics_port}/metrics", timeout=2)
    except httpx.HTTPError:
        return None
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="idle window to measure")
    parser.add_argument("--settle", type=float, default=5.0, help="wait after start-up")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="secml-bench-idle-"))
    kafka_port, metrics_port, prefect_port = free_ports(3)
    s = Settings(
        run_dir=tmp,
        kafka_port=kafka_port,
        consumer_metrics_port=metrics_port,
        prefect_port=prefect_port,  # nothing listens there: an idle consumer never calls Prefect
        kafka_control_topic="control-bench-idle",
    )
    stack = Stack(s)
    proc = None
    try:
        stack.up(["kafka"])
        broker = stack.pid("kafka")
        log = open(tmp / "consumer.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-m", "training.consumer"],
            cwd=ROOT,
            env=child_env(s),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 120
        while _metric(s, "consumer_messages_consumed_total") is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                print((tmp / "consumer.log").read_text())
                raise SystemExit("the consumer did not start")
            time.sleep(0.5)
        time.sleep(args.settle)

        bpg = broker or 0
        c0, b0, t0 = cpu_seconds(proc.pid), group_cpu_seconds(bpg), time.monotonic()
        time.sleep(args.seconds)
        c1, b1, t1 = cpu_seconds(proc.pid), group_cpu_seconds(bpg), time.monotonic()
        wall = t1 - t0
        print(f"idle window: {wall:.1f} s")
        print(f"consumer idle CPU: {100 * (c1 - c0) / wall:.2f}% of one core ({c1 - c0:.2f} s)")
        if broker:
            print(f"broker   idle CPU: {100 * (b1 - b0) / wall:.2f}% of one core ({b1 - b0:.2f} s)")

        from training.producer import make_producer

        prod = make_producer(s)
        sent = time.monotonic()
        prod.send(s.kafka_control_topic, b'{"inputs": "not a list"}').get(timeout=30)
        prod.close()
        while (_metric(s, "consumer_messages_dead_lettered_total") or 0) < 1:
            if time.monotonic() - sent > 60:
                print("reaction: the malformed message was not dead-lettered within 60 s")
                return 1
            time.sleep(0.01)
        took = time.monotonic() - sent
        print(f"reaction: a message sent while idle was dead-lettered in {took:.2f} s")
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        stack.down(["kafka"], timeout_s=5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
