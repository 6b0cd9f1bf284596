"""Monitoring helpers shared by the launcher, the UI's Monitoring page and the tests.

The Grafana dashboards in ``monitoring/grafana/dashboards/*.json`` are the single source of
truth for what is watched: Grafana renders them in production, and the Streamlit UI renders the
same panel queries against Prometheus locally. Prometheus finds its targets through file service
discovery (``targets/<job>.json`` next to ``prometheus.yml``); :func:`write_local_targets` writes
those files for the local stack from the settings.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from secml.settings import ROOT, Settings

log = logging.getLogger(__name__)

MONITORING_DIR = ROOT / "monitoring"
DASHBOARD_DIR = MONITORING_DIR / "grafana" / "dashboards"
PROMETHEUS_DATASOURCE_UID = "prometheus"

# Grafana's built-in interval variables, replaced so a query runs against Prometheus directly.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "${__rate_interval}": "5m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "1h",
    "${__range}": "1h",
}
_UNRESOLVED = re.compile(r"\$\{?[A-Za-z_]\w*\}?")


def load_dashboards(directory: Path | None = None) -> list[dict[str, Any]]:
    """Load every dashboard JSON in ``directory`` (default: the repo's), sorted by file name."""
    directory = Path(directory) if directory is not None else DASHBOARD_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"dashboard directory {directory} does not exist")
    dashboards = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("panels"), list):
            raise ValueError(f"{path.name}: not a Grafana dashboard (no 'panels' list)")
        dashboards.append(data)
    return dashboards


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel of a dashboard, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", []) or []


def expand_query(expr: str) -> str:
    """Replace Grafana's built-in interval variables so ``expr`` runs on Prometheus as is."""
    for name, value in _GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    leftover = _UNRESOLVED.search(expr)
    if leftover:
        raise ValueError(f"query uses an unknown template variable {leftover.group(0)}: {expr}")
    return expr


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """Return ``(panel_title, expr)`` for every Prometheus query of every panel, in order."""
    queries = []
    for panel in iter_panels(dashboard):
        if panel.get("type") == "row":
            continue
        title = panel.get("title") or f"panel {panel.get('id', '?')}"
        for target in panel.get("targets", []) or []:
            expr = target.get("expr")
            if expr:
                queries.append((title, expand_query(expr)))
    return queries


_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> list[str]:
    """The metric names a PromQL expression reads (functions, labels and keywords removed)."""
    s = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        token = m.group(0)
        before = s[m.start() - 1] if m.start() else " "
        if before.isdigit() or before == ".":
            continue  # exponent of a number such as 1e6
        if s[m.end() :].lstrip().startswith("(") or token.lower() in _PROMQL_WORDS:
            continue  # a function, an aggregation or a keyword
        names.add(token)
    return sorted(names)


def local_targets(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """The file-service-discovery content per scrape job for the local stack."""
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    ports = {
        "gateway": settings.gateway_port,
        "triton": settings.triton_metrics_port,
        "mlflow": settings.mlflow_port,
        "consumer": settings.consumer_metrics_port,
        "prefect-exporter": settings.prefect_exporter_port,
        "prometheus": settings.prometheus_port,
    }
    return {
        job: [{"targets": [f"{host}:{port}"], "labels": {"service": job}}]
        for job, port in ports.items()
    }


def write_local_targets(settings: Settings, directory: Path) -> list[Path]:
    """Write ``<directory>/<job>.json`` for every scrape job (atomically); return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for job, groups in local_targets(settings).items():
        path = directory / f"{job}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(groups, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    log.debug("wrote %d Prometheus target files to %s", len(written), directory)
    return written
