"""AppTest of the Monitoring page: the Grafana dashboards' panels drawn from Prometheus."""

from __future__ import annotations

import json
import socket

import pytest

from secml.monitoring import load_dashboards
from secml.settings import get_settings
from ui.views.monitoring import UNITS

from ..conftest import page_app, texts


def _closed_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_dashboard_and_panel_is_listed(monkeypatch, ui_settings) -> None:
    monkeypatch.setenv("SECML_PROMETHEUS_URL", f"http://127.0.0.1:{_closed_port()}")
    get_settings.cache_clear()
    boards = load_dashboards()
    at = page_app("monitoring").run()
    assert not at.exception
    if not boards:
        assert any("No dashboards" in i for i in texts(at.info))
        return
    assert at.selectbox(key="mon_board").options == [b["title"] for b in boards]
    for board in boards:
        at.selectbox(key="mon_board").select(board["title"]).run()
        assert not at.exception
        titles = {p.get("title") for p in _panels(board)}
        shown = {m.removeprefix("**").removesuffix("**") for m in texts(at.markdown)}
        assert titles & shown, f"{board['title']}: no panel drawn"
        # Prometheus is down: each query says so instead of failing the page
        assert any("ConnectError" in c or "connect" in c.lower() for c in texts(at.caption))
        assert not any("`" in c for c in texts(at.caption)), "no raw PromQL in the messages"


def _panels(board: dict) -> list[dict]:
    """Panels (rows flattened) that have at least one PromQL target."""
    out = []
    for p in board.get("panels", []):
        for q in [p, *(p.get("panels") or [])]:
            if any(t.get("expr") for t in q.get("targets") or []):
                out.append(q)
    return out


@pytest.mark.integration
def test_panels_show_live_prometheus_data(prometheus_server, ui_settings, monkeypatch) -> None:
    import time

    import httpx

    url = str(prometheus_server.prometheus_url)
    monkeypatch.setenv("SECML_PROMETHEUS_URL", url)
    get_settings.cache_clear()
    deadline = time.monotonic() + 90
    while not httpx.get(f"{url}/api/v1/query", params={"query": "up"}).json()["data"]["result"]:
        assert time.monotonic() < deadline, "Prometheus scraped nothing in 90 s"
        time.sleep(2)
    boards = [b["title"] for b in load_dashboards()]
    assert "Platform overview" in boards
    at = page_app("monitoring").run()
    at.selectbox(key="mon_board").select("Platform overview").run()
    at.selectbox(key="mon_window").select("15 minutes").run()
    assert not at.exception
    # "Targets up" (up) and "Firing alerts" (or vector(0)) have data as soon as one scrape ran
    assert len(at.get("vega_lite_chart")) >= 2
    assert not any("refused" in c for c in texts(at.caption)), texts(at.caption)
    # a panel without data says so in words, never with its raw PromQL
    targets = [t for b in load_dashboards() for p in _panels(b) for t in p["targets"]]
    exprs = {t["expr"] for t in targets if t.get("expr")}
    shown = texts(at.caption)
    assert not [c for c in shown if any(e in c for e in exprs)], shown
    for chart in at.get("vega_lite_chart"):
        titles = _axis_titles(json.loads(chart.proto.spec))
        assert titles["x"] == {"time (UTC)"}, titles
        assert titles["y"] and titles["y"] <= set(UNITS.values()), titles


def _axis_titles(spec: object) -> dict[str, set[str]]:
    """Every x / y encoding title anywhere in a Vega-Lite spec (layers included)."""
    found: dict[str, set[str]] = {"x": set(), "y": set()}
    stack = [spec]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            enc = node.get("encoding")
            if isinstance(enc, dict):
                for axis in ("x", "y"):
                    title = (enc.get(axis) or {}).get("title")
                    if isinstance(title, str):
                        found[axis].add(title)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found
