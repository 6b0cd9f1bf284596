"""The gateway as the stack runs it: pyarrow never enters its memory, and it still answers."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from secml.settings import Settings


@pytest.mark.integration
def test_the_gateway_maps_pandas_but_no_pyarrow(gateway_server: Settings, _stack) -> None:
    """uvicorn runs the gateway with pyarrow unimportable (``secml.stack.mlflow_server.UVICORN``):
    pandas is loaded (the featurizers use it), pyarrow is not; the gateway answers and validates."""
    ready = httpx.get(f"{gateway_server.gateway_url}/ready", timeout=30)
    assert ready.status_code == 200, ready.text
    r = httpx.post(f"{gateway_server.gateway_url}/predict", json={}, timeout=30)
    assert r.status_code in (401, 403, 422)  # refused or validated, not a server error
    pid = _stack.pid("gateway")
    assert pid is not None
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "/pandas/" in maps
    assert "/pyarrow/" not in maps
