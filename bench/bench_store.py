"""Detections-store benchmark: writing a batch of detections, against a bare sqlite3 insert.

The gateway, the stream scorer and the batch pipelines write every anomaly through
``DetectionStore.add_detections`` (validation, the record normalised to plain JSON, one
transaction). Both paths write the same Duo-like detections into their own SQLite file in the
same run, interleaved; the bare path is ``sqlite3.executemany`` of rows serialised beforehand
(no validation, no JSON work inside the timing): the floor any store could reach.

    python -m bench.bench_store [--batch 256] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from secml.dfp.generator import generate
from secml.store import DetectionStore


def detections(records: list[dict[str, Any]], tag: str) -> list[dict[str, Any]]:
    """Detection rows as the gateway writes them (record, top features, scores)."""
    top = [{"feature": f"f{i}", "z": 2.5 + i, "expected": "a", "actual": "b"} for i in range(3)]
    return [
        {
            "detector": "dfp",
            "source": "duo",
            "event_id": f"{tag}-{i}",
            "record": rec,
            "score": 3.25,
            "is_anomaly": True,
            "model_version": "3",
            "user": "alice@example.com",
            "event_time": "2026-11-01T10:00:00Z",
            "details": {"mean_abs_z": 2.1, "max_abs_z": 4.0, "top_features": top},
        }
        for i, rec in enumerate(records)
    ]


def bare_writer(path: Path) -> Any:
    """A sqlite3 table like the store's detections table; its batch insert."""
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE d (id INTEGER PRIMARY KEY, detector TEXT, source TEXT, event_id TEXT, "
        "user TEXT, event_time TEXT, score REAL, is_anomaly INTEGER, model_version TEXT, "
        "record TEXT, details TEXT, created_at TEXT)"
    )

    def write(rows: list[tuple]) -> None:
        with con:
            con.executemany("INSERT INTO d VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?)", rows)

    return write


def main() -> None:
    """Run and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    records = generate("duo", n_users=20, days=10, n_attacks=0, seed=4).records[: args.batch]
    with tempfile.TemporaryDirectory() as tmp:
        store = DetectionStore(f"sqlite:///{tmp}/store.db")
        write_bare = bare_writer(Path(tmp) / "bare.db")
        times: dict[str, list[float]] = {"store": [], "bare": []}
        for r in range(args.rounds + 1):  # the first round warms both up and is dropped
            rows = detections(records, f"r{r}")
            flat = [
                (d["detector"], d["source"], d["event_id"], d["user"], d["event_time"],
                 d["score"], 1, d["model_version"], json.dumps(d["record"]),
                 json.dumps(d["details"]), "2026-11-01T10:00:00Z")
                for d in rows
            ]  # fmt: skip
            t = time.perf_counter()
            store.add_detections(rows)
            store_s = time.perf_counter() - t
            t = time.perf_counter()
            write_bare(flat)
            bare_s = time.perf_counter() - t
            if r:
                times["store"].append(store_s)
                times["bare"].append(bare_s)
        store.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"### Detections store, {args.batch} Duo detections per batch "
          f"(medians of {args.rounds} interleaved rounds, SQLite)\n")  # fmt: skip
    print("| path | ms per batch | detections/s |")
    print("| --- | ---: | ---: |")
    for name, label in (("store", "DetectionStore.add_detections"), ("bare", "bare sqlite3")):
        print(f"| {label} | {med[name] * 1000:.1f} | {args.batch / med[name]:,.0f} |")
    print(f"\n- store / bare sqlite3 time: {med['store'] / med['bare']:.2f}x")


if __name__ == "__main__":
    main()
