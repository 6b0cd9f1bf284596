"""Benchmark the control-message consumer against a bare kafka-python consume loop, in one run.

Starts a private broker (noida-db) and Prefect server on free ports in a temporary run directory
(or uses ``--bootstrap``/``--prefect-api`` when given), produces the same ``--messages`` records
(10% malformed) to three topics and measures, in messages/s:

* bare:      ``KafkaConsumer.poll`` + ``json.loads`` per record, one commit at the end;
* validated: the consumer with dispatch replaced by a no-op (contract, ledger, DLQ, commits);
* dispatched: the consumer creating real Prefect flow runs (stand-in deployments, no worker),
  in bulk requests (the default) and with one request per run.

Usage: ``python -m bench.bench_consumer --messages 300``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from secml.settings import ROOT, Settings
from training.consumer import DEPLOYMENTS, ControlConsumer, Dispatch, PrefectDispatcher
from training.producer import make_producer

EXAMPLE = json.loads((ROOT / "control_messages" / "duo-training-payload.json").read_text())
SOURCES = [("duo", "training"), ("azure", "training"), ("nvsmi", "training"), ("duo", "inference")]


def _records(n: int, tag: str) -> list[bytes]:
    out = []
    for i in range(n):
        if i % 10 == 9:
            out.append(b'{"inputs": [{"tasks": [{"type": "trian"}]}]}')
            continue
        m = copy.deepcopy(EXAMPLE)
        m["id"] = f"{tag}-{i}"
        src, kind = SOURCES[i % len(SOURCES)]
        m["inputs"][0]["metadata"]["source"] = src
        m["inputs"][0]["tasks"][1]["type"] = kind
        out.append(json.dumps(m).encode())
    return out


def _produce(s: Settings, topic: str, records: list[bytes]) -> None:
    prod = make_producer(s)
    for raw in records:
        prod.send(topic, raw)
    prod.flush(timeout=120)
    prod.close()


def bare_loop(s: Settings, topic: str, n: int) -> float:
    """Messages/s for a plain poll + json.loads loop with one commit."""
    from kafka import KafkaConsumer

    cons = KafkaConsumer(
        topic,
        bootstrap_servers=s.kafka_bootstrap_servers,
        group_id=f"bare-{topic}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=100,
    )
    seen = 0
    start = None
    while seen < n:
        for recs in cons.poll(timeout_ms=500).values():
            start = start or time.perf_counter()
            for r in recs:
                try:
                    json.loads(r.value)
                except ValueError:
                    pass
                seen += 1
    cons.commit()
    elapsed = time.perf_counter() - (start or time.perf_counter())
    cons.close()
    return n / elapsed


def consumer_loop(s: Settings, n: int, deployments: dict, dispatcher: Any = None) -> float:
    """Messages/s through ControlConsumer (from the first record to the last commit)."""
    cons = ControlConsumer(s, deployments=deployments, dispatcher=dispatcher)
    done = 0  # next offset to commit: every record before it is dispatched or dead-lettered
    start = None
    try:
        while done < n or cons._pending_commit:
            res = cons.poll_once()
            if res.consumed and start is None:
                start = time.perf_counter()
            done = max([done, *res.commit.values()])
        elapsed = time.perf_counter() - (start or time.perf_counter())
    finally:
        cons.close()
    return n / elapsed


def _standins(prefix: str) -> dict[tuple[str, str], str]:
    from prefect.client.orchestration import get_client

    names = {}
    with get_client(sync_client=True) as client:
        for flow in ("dfp-train", "dfp-infer", "abp-train"):
            fid = client.create_flow_from_name(f"{prefix}-{flow}")
            client.create_deployment(fid, "default")
            names[flow] = f"{prefix}-{flow}/default"
    return {key: names[real.split("/")[0]] for key, real in DEPLOYMENTS.items()}


def main() -> None:
    """Run the three loops on the same records and print rates and ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--bootstrap", help="use this broker instead of starting one")
    ap.add_argument("--prefect-api", help="use this Prefect API instead of starting one")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # retries and dead letters are expected here

    import os

    from secml.stack import Stack, free_ports

    run = Path(tempfile.mkdtemp(prefix="bench-consumer-"))
    kport, pport = free_ports(2)
    s = Settings(
        run_dir=run,
        kafka_port=kport,
        prefect_port=pport,
        kafka_bootstrap_servers=args.bootstrap or f"127.0.0.1:{kport}",
        prefect_api_url=args.prefect_api or f"http://127.0.0.1:{pport}/api",
    )
    os.environ["PREFECT_API_URL"] = s.prefect_api_url or ""
    os.environ["PREFECT_HOME"] = str(run / "prefect")
    stack = Stack(s)
    wanted = [
        n for n, given in (("kafka", args.bootstrap), ("prefect", args.prefect_api)) if not given
    ]
    if wanted:
        print(f"starting {', '.join(wanted)} in {run} ...")
        stack.up(wanted)
    try:
        tag = uuid.uuid4().hex[:6]
        n = args.messages
        records = _records(n, tag)
        topics = {k: f"bench-{k}-{tag}" for k in ("bare", "validated", "dispatched", "single")}
        for t in topics.values():
            _produce(s, t, records)
        valid = sum(1 for i in range(n) if i % 10 != 9)
        print(f"{n} records per loop ({valid} valid, {n - valid} malformed)")

        bare = bare_loop(s, topics["bare"], n)
        print(f"bare kafka-python loop    {bare:10.1f} msg/s")

        def noop(d: Dispatch) -> str:
            return uuid.uuid4().hex

        sv = s.model_copy(
            update={
                "kafka_control_topic": topics["validated"],
                "kafka_dead_letter_topic": f"{topics['validated']}-dlq",
                "kafka_consumer_group": f"g-{topics['validated']}",
                "consumer_ledger_url": f"sqlite:///{run / 'ledger-validated.db'}",
            }
        )
        validated = consumer_loop(sv, n, dict(DEPLOYMENTS), dispatcher=noop)
        print(f"consumer, no-op dispatch  {validated:10.1f} msg/s  ({validated / bare:.3f} × bare)")

        sd = sv.model_copy(
            update={
                "kafka_control_topic": topics["dispatched"],
                "kafka_dead_letter_topic": f"{topics['dispatched']}-dlq",
                "kafka_consumer_group": f"g-{topics['dispatched']}",
                "consumer_ledger_url": f"sqlite:///{run / 'ledger-dispatched.db'}",
            }
        )
        dispatched = consumer_loop(sd, n, _standins(f"bench-{tag}"))
        print(
            f"consumer → Prefect, bulk  {dispatched:10.1f} msg/s  ({dispatched / bare:.4f} × bare; "
            f"{dispatched * valid / n:.1f} flow runs/s)"
        )

        ss = sd.model_copy(
            update={
                "kafka_control_topic": topics["single"],
                "kafka_dead_letter_topic": f"{topics['single']}-dlq",
                "kafka_consumer_group": f"g-{topics['single']}",
                "consumer_ledger_url": f"sqlite:///{run / 'ledger-single.db'}",
            }
        )
        one_by_one = PrefectDispatcher(s.prefect_api_url)
        single = consumer_loop(
            ss, n, _standins(f"bench1-{tag}"), dispatcher=lambda d: one_by_one(d)
        )
        one_by_one.close()
        print(
            f"consumer → Prefect, 1/req {single:10.1f} msg/s  ({single / bare:.4f} × bare; "
            f"{single * valid / n:.1f} flow runs/s; bulk is {dispatched / single:.2f}×)"
        )
    finally:
        if wanted:
            stack.down(wanted, timeout_s=15)
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
