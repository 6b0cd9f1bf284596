"""Send raw records through the gateway in batches (``make demo`` traffic, smoke checks).

``python -m serving.traffic --detector abp --source nvsmi FILE.jsonlines [--batch 256]``
prints how many records were scored and how many detections were stored.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass
class TrafficSummary:
    """What one traffic run produced."""

    records: int = 0
    anomalies: int = 0
    stored: int = 0
    models: set[str] = field(default_factory=set)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; errors name the line."""
    out = []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{no}: not JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{no}: expected a JSON object")
        out.append(rec)
    return out


def send(
    detector: str,
    source: str,
    records: Iterable[dict[str, Any]],
    batch: int = 256,
    settings: Settings | None = None,
) -> TrafficSummary:
    """POST ``records`` to the gateway's /predict in batches; raise on any non-200 answer."""
    s = settings or get_settings()
    summary = TrafficSummary()
    recs = list(records)
    headers = {"X-API-Key": s.gateway_api_key.get_secret_value()}
    with httpx.Client(base_url=s.gateway_url or "", headers=headers, timeout=120) as client:
        for i in range(0, len(recs), batch):
            part = recs[i : i + batch]
            r = client.post(
                "/predict", json={"detector": detector, "source": source, "records": part}
            )
            if r.status_code != 200:
                raise RuntimeError(
                    f"gateway answered {r.status_code} for records {i}..{i + len(part) - 1}: "
                    f"{r.text[:500]}"
                )
            body = r.json()
            summary.records += body["n_records"]
            summary.anomalies += body["n_anomalies"]
            summary.stored += sum(x["detection_id"] is not None for x in body["results"])
            summary.models.update(x["model_version"] for x in body["results"])
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", required=True, choices=["abp", "dfp"])
    ap.add_argument("--source", required=True, choices=["nvsmi", "duo", "azure"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--limit", type=int, default=None, help="send at most N records")
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=get_settings().log_level, format="%(message)s")
    records = [r for f in args.files for r in read_jsonl(f)][: args.limit]
    summary = send(args.detector, args.source, records, args.batch)
    log.info(
        "scored %d %s/%s records: %d anomalies, %d stored detections, models %s",
        summary.records,
        args.detector,
        args.source,
        summary.anomalies,
        summary.stored,
        ", ".join(sorted(summary.models)[:5]),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
