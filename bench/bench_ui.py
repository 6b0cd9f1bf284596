"""Analyst pages with 100,000 detections in the store: server-side events vs the old full load.

Fills a fresh SQLite store (the local default) with ``--detections`` seeded detections of
``--events`` distinct records (so each record is scored many times, as the demo traffic does),
labels a share of the events, then times, each the median of ``--repeat`` runs:

- the baseline the Detections page used before: ``store.detections(limit=5000)`` then filtering
  and counting in pandas (5,000 rows at most, duplicates included);
- ``store.events`` page 1 and a deep page, sorted by score, filtered to unlabelled, by user text;
- ``store.summary`` and ``store.timeline`` (the triage home) and ``store.event_detections``;
- the Detections and Home pages rendered headless (``streamlit.testing.v1.AppTest``), which is
  what the analyst waits for on each rerun (minus the browser's drawing); and, when git has it,
  the Detections page as it was before events (``--old-ref``, default the commit before them),
  rendered the same way on the same store.

Prints each figure and its ratio to the baseline. Usage:
``python -m bench.bench_ui --detections 100000 --events 5000``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _rows(n: int, events: int, seed: int) -> list[dict[str, Any]]:
    """``n`` detections over ``events`` distinct records (DFP duo/azure and ABP)."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    base = []
    for e in range(events):
        kind = rng.choice(("duo", "azure", "nvsmi"))
        user = f"user{rng.randrange(400)}@example.com" if kind != "nvsmi" else f"GPU-{e % 300}"
        when = start + timedelta(minutes=rng.randrange(60 * 24 * 14))
        base.append((kind, user, when, {"event": e, "user": user, "t": when.isoformat()}))
    rows = []
    for i in range(n):
        kind, user, when, record = base[i % events] if i < events else rng.choice(base)
        abp = kind == "nvsmi"
        rows.append(
            {
                "detector": "abp" if abp else "dfp",
                "source": kind,
                "user": user,
                "event_time": when,
                "score": rng.random() if abp else rng.uniform(2, 12),
                "model_version": "abp-nvsmi-xgb:3" if abp else f"dfp-{kind}-generic:2",
                "record": record,
                "details": {"threshold": 0.5 if abp else 2.0, "top_features": []},
            }
        )
    return rows


def _median(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _old_page(ref: str) -> str | None:
    """The Detections page's source at git ``ref`` (None when git or the ref is missing)."""
    import subprocess

    from secml.settings import ROOT

    try:
        out = subprocess.run(
            ["git", "show", f"{ref}:ui/views/detections.py"],
            cwd=ROOT, capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout + "\nrender()\n"


def _page(module: str, source: str | None = None) -> Callable[[], Any]:
    """A function that renders ``ui.views.<module>`` (or ``source``) once, headless, signed in."""
    from streamlit.testing.v1 import AppTest

    def run() -> None:
        script = source or f"from ui.views import {module}\n{module}.render()\n"
        at = AppTest.from_string(script)
        at.session_state["user"] = "bench"
        at.run(timeout=120)
        if at.exception:
            raise RuntimeError(f"{module} page failed: {at.exception[0].message}")

    return run


def main() -> None:
    """Fill the store, time the queries and pages, print the figures and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detections", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--old-ref", default="46b6539", help="git ref of the pre-events page")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    os.environ["SECML_STORE_URL"] = f"sqlite:///{tmp / 'detections.db'}"
    os.environ["SECML_RUN_DIR"] = str(tmp)
    os.environ["SECML_PROMETHEUS_URL"] = "http://127.0.0.1:9"  # no alerts source: fails fast
    from secml.settings import get_settings
    from secml.store import DetectionStore

    get_settings.cache_clear()
    store = DetectionStore(str(get_settings().store_url))
    t0 = time.perf_counter()
    rows = _rows(args.detections, args.events, args.seed)
    for i in range(0, len(rows), 5000):
        store.add_detections(rows[i : i + 5000])
    print(f"filled {store.count()} detections of {args.events} records "
          f"in {time.perf_counter() - t0:.1f} s ({tmp})")  # fmt: skip
    first = store.events(page_size=500)
    for n, det_id in enumerate(first.rows["detection_id"][:200]):
        store.label_event(int(det_id), "true_positive" if n % 3 else "false_positive", "bench")

    def baseline() -> None:
        df = store.detections(limit=5000)
        shown = df[df["label"].isna() & (df["score"] >= 3)]
        _ = len(shown), shown["user"].nunique()

    r = args.repeat
    base = _median(baseline, r)
    figures = {
        "events page 1 (last seen)": lambda: store.events(page=1, page_size=50),
        "events page 40 by score": lambda: store.events(sort="score", page=40, page_size=50),
        "events unlabelled, score >= 3": lambda: store.events(label="unlabelled", min_score=3),
        "events user contains 'user1'": lambda: store.events(user_contains="user1"),
        "summary (counts per detector)": store.summary,
        "timeline (per hour)": lambda: store.timeline("hour"),
        "event detections of one event": lambda: store.event_detections(int(det_id)),
    }
    print(f"\n{'what':42} {'median s':>9} {'vs baseline':>12}")
    print(f"{'baseline: detections(limit=5000) + pandas':42} {base:9.3f} {'1.00x':>12}")
    for name, fn in figures.items():
        t = _median(fn, r)
        print(f"{name:42} {t:9.3f} {t / base:11.2f}x")
    page_r = max(1, r // 2)
    pages = {"detections": _page("detections"), "home": _page("home")}
    old = _old_page(args.old_ref)
    if old is not None:
        pages[f"detections before events ({args.old_ref})"] = _page("detections", old)
    rendered = {}
    for name, fn in pages.items():
        rendered[name] = t = _median(fn, page_r)
        print(f"{'page render: ' + name:42} {t:9.3f} {t / base:11.2f}x")
    if old is not None:
        before = rendered[f"detections before events ({args.old_ref})"]
        print(f"\nDetections page: {rendered['detections']:.3f} s now vs {before:.3f} s before "
              f"({before / rendered['detections']:.1f}x faster), showing every event instead "
              "of the newest 5,000 detections")  # fmt: skip
    print(f"\nevents: {first.total} (one row each) for {store.count()} detections; "
          "the baseline saw 5,000 detection rows with duplicates")  # fmt: skip
    store.close()


if __name__ == "__main__":
    main()
