"""``python -m secml.stack up|down|status|logs [service ...]``: the commands behind ``make up``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from secml.settings import get_settings
from secml.stack import secrets as local_secrets
from secml.stack.launcher import ServiceState, Stack
from secml.stack.preparation import StackError
from secml.stack.services import BY_NAME

log = logging.getLogger(__name__)


def format_table(rows: list[ServiceState]) -> str:
    """A plain-text table: service, URL, state."""
    header = ("service", "url", "state", "memory")
    data = [(r.name, r.url, r.state, f"{r.rss_mb:.0f} MiB" if r.pid else "-") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *data, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    total = sum(r.rss_mb for r in rows)
    return "\n".join(
        [line.format(*header), line.format(*("-" * w for w in widths))]
        + [line.format(*row) for row in data]
        + [f"total memory: {total:.0f} MiB"]
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m secml.stack up|down|status|logs [service ...]``."""
    parser = argparse.ArgumentParser(
        prog="secml.stack", description="Start, check, list and stop the local servers."
    )
    parser.add_argument("action", choices=["up", "down", "status", "logs"])
    parser.add_argument("services", nargs="*", help=f"a subset of: {', '.join(BY_NAME)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.services) - set(BY_NAME))
    if unknown:
        parser.error(f"unknown service(s) {unknown}; known: {', '.join(BY_NAME)}")
    run_dir = get_settings().run_dir
    if args.action == "up":
        local_secrets.ensure(run_dir)
    if local_secrets.load(run_dir):  # the servers' credentials: the launcher checks with them
        get_settings.cache_clear()
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    stack = Stack(settings)
    out = sys.stdout
    if args.action == "up":
        t0 = time.monotonic()
        try:
            rows = stack.up(args.services or None)
        except StackError as exc:
            log.error("%s", exc)
            out.write(format_table(stack.status()) + "\n")
            return 1
        out.write(
            format_table(rows) + f"\n\nall {len(rows)} services ready in "
            f"{time.monotonic() - t0:.1f}s; logs in {stack.log_dir}\n"
            f"credentials (generated): {local_secrets.secrets_file(run_dir)}; in a shell: "
            f"set -a; . {local_secrets.secrets_file(run_dir)}; set +a\n"
        )
    elif args.action == "down":
        stopped = stack.down(args.services or None)
        out.write(f"stopped: {', '.join(stopped) or 'nothing was running'}\n")
    elif args.action == "status":
        rows = stack.status()
        out.write(format_table(rows) + "\n")
        return 0 if all(r.state in ("ready", "not built yet") for r in rows) else 3
    else:
        logs = sorted(stack.log_dir.glob("*.log"))
        if not logs:
            out.write(f"no logs under {stack.log_dir}\n")
            return 0
        os.execvp("tail", ["tail", "-n", "20", "-F", *map(str, logs)])
    return 0
