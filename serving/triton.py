"""Async client for Triton's HTTP/REST (KServe v2) API that reuses its connections.

One ``httpx.AsyncClient`` (a keep-alive pool) per process. Errors are typed so the gateway can
answer 503 (Triton down or overloaded), 504 (timeout) or name the model's own error. When Triton
comes back, the pool simply opens new connections: no restart is needed.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from serving import metrics

log = logging.getLogger(__name__)


class TritonError(RuntimeError):
    """Base class of the errors a Triton call can raise."""


class TritonUnavailable(TritonError):
    """Triton cannot be reached or is not ready (answer 503 with Retry-After)."""


class TritonTimeout(TritonError):
    """Triton did not answer within the configured timeout."""


class TritonModelError(TritonError):
    """Triton answered with an error for a model (unknown model, model raised)."""

    def __init__(self, model: str, status: int, message: str) -> None:
        """Keep the model, HTTP status and Triton's message."""
        super().__init__(f"{model}: {message}")
        self.model = model
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Tensor:
    """One named tensor of a KServe v2 request."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]

    def as_json(self) -> dict[str, Any]:
        """The tensor in KServe v2 JSON form."""
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": self.shape,
            "data": self.data,
        }


def bytes_column(name: str, values: list[str]) -> Tensor:
    """A BYTES tensor of shape [n, 1] (one string per row, batch dimension first)."""
    return Tensor(name, "BYTES", [len(values), 1], list(values))


class TritonClient:
    """Async KServe v2 client over one pooled ``httpx.AsyncClient``."""

    def __init__(self, url: str, timeout_s: float = 10.0, max_connections: int = 64) -> None:
        """``url`` is ``host:port`` (Triton's HTTP endpoint) or a full ``http://`` URL."""
        base = url if url.startswith("http") else f"http://{url}"
        self.base_url = base.rstrip("/")
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(2.0, timeout_s)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Send one request, mapping transport errors to typed Triton errors."""
        try:
            return await self._client.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            msg = f"Triton at {self.base_url} did not answer in time ({exc})"
            raise TritonTimeout(msg) from exc
        except httpx.TransportError as exc:
            raise TritonUnavailable(f"Triton at {self.base_url} is unreachable ({exc})") from exc

    async def server_ready(self) -> bool:
        """True when Triton answers ``/v2/health/ready`` with 200."""
        try:
            r = await self._request("GET", "/v2/health/ready")
        except TritonError:
            return False
        return r.status_code == 200

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        """True when ``model`` (optionally one ``version``) is loaded and ready."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready"
        try:
            r = await self._request("GET", path)
        except TritonError:
            return False
        return r.status_code == 200

    async def repository_index(self) -> list[dict[str, Any]]:
        """Every model in the repository with its version and state."""
        r = await self._request("POST", "/v2/repository/index", json={})
        if r.status_code != 200:
            raise TritonUnavailable(f"repository index failed: HTTP {r.status_code} {r.text}")
        return list(r.json())

    async def infer(
        self, model: str, inputs: list[Tensor], outputs: list[str] | None = None
    ) -> dict[str, Any]:
        """Run one inference; return ``{output name: data list}`` plus ``model_version``."""
        body: dict[str, Any] = {"inputs": [t.as_json() for t in inputs]}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        start = time.perf_counter()
        outcome = "error"
        try:
            r = await self._request("POST", f"/v2/models/{model}/infer", json=body)
            if r.status_code == 200:
                outcome = "ok"
                payload = r.json()
                result: dict[str, Any] = {o["name"]: o["data"] for o in payload.get("outputs", [])}
                result["model_version"] = payload.get("model_version")
                return result
            message = _error_message(r)
            if r.status_code in (502, 503) or "server is not ready" in message.lower():
                raise TritonUnavailable(f"Triton answered {r.status_code}: {message}")
            raise TritonModelError(model, r.status_code, message)
        finally:
            metrics.TRITON_LATENCY.labels(model=model, outcome=outcome).observe(
                time.perf_counter() - start
            )


def _error_message(r: httpx.Response) -> str:
    """Triton's error text from a non-200 answer."""
    try:
        return str(r.json().get("error", r.text))
    except (json.JSONDecodeError, ValueError, AttributeError):
        return r.text
