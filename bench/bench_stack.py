"""Footprint of the whole local stack (as `make up` runs it): idle CPU per service, memory.

Starts every service through :class:`secml.stack.Stack` with generated secrets (as ``make up``
does) in a temporary run directory on free ports, waits ``--settle`` seconds, then reads each
service's process-group CPU time from ``/proc`` over ``--seconds`` of idleness and its RSS at the
start and the end of the window. Prints a table (CPU as % of one core, RSS and PSS in MiB), the
total RSS against the 1.5 GiB budget, the highest idle CPU against the 2% budget, and RSS growth
over the window (the baseline is the same stack's RSS at the window's start). Each service counts
its process group and every descendant (Triton's python-backend stubs, server workers), see
:func:`secml.stack.tree_pids`. RSS counts pages shared between processes once per process (an
upper bound; the budget is checked on it); PSS splits them (what the stack really holds).
``--processes`` also lists every process with its RSS. ``--running`` measures the stack ``make up``
started instead (e.g. after ``make demo``: models synced, flows run) and leaves it running.

Usage: ``python -m bench.bench_stack --seconds 60``, ``python -m bench.bench_stack --running``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from secml.settings import Settings, get_settings
from secml.stack import (
    SERVICES,
    Stack,
    StackError,
    free_ports,
    group_pss_mb,
    group_rss_mb,
    tree_pids,
)
from secml.stack import secrets as local_secrets

TICKS = os.sysconf("SC_CLK_TCK")
RSS_BUDGET_MIB = 1.5 * 1024
CPU_BUDGET_PCT = 2.0
PORTS = sorted({p for svc in SERVICES for p in svc.ports})


def _stat(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used so far by group ``pgid`` and its descendants (live ones)."""
    stats = [_stat(pid) for pid in tree_pids(pgid)]
    return sum(int(f[11]) + int(f[12]) for f in stats if f) / TICKS


def print_processes(name: str, pgid: int) -> None:
    """Every process of one service: pid, RSS, command line (shortened)."""
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in tree_pids(pgid):
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page / 2**20
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cmd = " ".join(cmd.split())  # one line (a -c program has newlines)
        except OSError:
            continue
        print(f"  {name:<16}{pid:>8}{rss:>8.0f} M  {cmd[:90]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="idle window to measure")
    parser.add_argument("--settle", type=float, default=20.0, help="wait after every service is up")
    parser.add_argument("--processes", action="store_true", help="list every process's RSS")
    parser.add_argument(
        "--running",
        action="store_true",
        help="measure the stack `make up` started (no start, no stop, no settle)",
    )
    args = parser.parse_args(argv)
    if args.running:
        stack = Stack(get_settings())
        pids = {svc.name: stack.pid(svc.name) for svc in SERVICES}
        pids = {n: p for n, p in pids.items() if p}
        if not pids:
            print(f"no service of `make up` runs (run dir {stack.settings.run_dir})")
            return 1
        measure(pids, args.seconds, args.processes)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="secml-bench-stack-"))
    local_secrets.ensure(tmp)
    secret = {
        k.removeprefix("SECML_").lower(): v
        for k, v in local_secrets.read(tmp).items()
        if k.startswith("SECML_")
    }
    ports = dict(zip(PORTS, free_ports(len(PORTS), 40000, 49999), strict=True))
    s = Settings(run_dir=tmp, **ports, **secret)
    stack = Stack(s)
    try:
        t0 = time.monotonic()
        try:
            stack.up()
        except StackError as exc:
            print(f"the stack did not start: {exc}")
            return 1
        print(f"every service ready in {time.monotonic() - t0:.0f} s; settling {args.settle:.0f} s")
        time.sleep(args.settle)
        pids = {svc.name: stack.pid(svc.name) for svc in SERVICES}
        measure({n: p for n, p in pids.items() if p}, args.seconds, args.processes)
        return 0
    finally:
        stack.down(timeout_s=5)
        shutil.rmtree(tmp, ignore_errors=True)


def measure(pids: dict[str, int], seconds: float, processes: bool) -> None:
    """Print each service's idle CPU and memory over ``seconds`` (service -> its group's PID)."""
    cpu0 = {n: group_cpu_s(p) for n, p in pids.items()}
    rss0 = {n: group_rss_mb(p) for n, p in pids.items()}
    w0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - w0
    cpu1 = {n: group_cpu_s(p) for n, p in pids.items()}
    rss1 = {n: group_rss_mb(p) for n, p in pids.items()}
    pss1 = {n: group_pss_mb(p) for n, p in pids.items()}
    nproc = {n: len(tree_pids(p)) for n, p in pids.items()}
    print(f"\nidle window {wall:.0f} s, {len(pids)} services")
    print(
        f"{'service':<18}{'procs':>6}{'idle CPU %':>11}{'RSS start':>11}{'RSS end':>10}"
        f"{'PSS end':>10}"
    )
    for n in pids:
        pct = 100 * (cpu1[n] - cpu0[n]) / wall
        print(
            f"{n:<18}{nproc[n]:>6}{pct:>10.2f}%{rss0[n]:>9.0f} M{rss1[n]:>8.0f} M{pss1[n]:>8.0f} M"
        )
    if processes:
        print("\nprocesses (pid, RSS, command)")
        for n, p in pids.items():
            print_processes(n, p)
    worst = max(pids, key=lambda n: cpu1[n] - cpu0[n])
    worst_pct = 100 * (cpu1[worst] - cpu0[worst]) / wall
    total0, total1 = sum(rss0.values()), sum(rss1.values())
    print(
        f"\ntotal RSS {total1:.0f} MiB = {total1 / RSS_BUDGET_MIB:.2f}x the "
        f"{RSS_BUDGET_MIB:.0f} MiB budget; growth over the window {total1 / total0:.3f}x; "
        f"total PSS {sum(pss1.values()):.0f} MiB"
    )
    print(
        f"highest idle CPU: {worst} {worst_pct:.2f}% = {worst_pct / CPU_BUDGET_PCT:.2f}x "
        f"the {CPU_BUDGET_PCT:.0f}% budget"
    )


if __name__ == "__main__":
    raise SystemExit(main())
