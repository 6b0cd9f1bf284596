"""AppTest of the Training page: start deployments, watch run states."""

from __future__ import annotations

import socket

from secml.settings import get_settings

from ..conftest import page_app, texts


def test_prefect_down_is_reported(ui_settings, monkeypatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SECML_PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    get_settings.cache_clear()
    at = page_app("training").run()
    assert not at.exception
    assert any(f"127.0.0.1:{port}/api is not available" in e for e in texts(at.error))
    links = " ".join(texts(at.markdown))
    assert f"http://127.0.0.1:{port}" in links and ui_settings.mlflow_tracking_uri in links
