"""Async Triton client on ``tritonclient.grpc.aio``: binary tensors, one channel per process.

Errors are typed so the gateway can answer 503 (Triton down or overloaded), 504 (timeout) or
name the model's own error. The gRPC channel reconnects by itself when Triton comes back: no
restart is needed. The channel is opened on first use, inside the event loop that uses it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving import metrics

log = logging.getLogger(__name__)

# gRPC status -> the HTTP status the gateway reasons with
_HTTP_OF_GRPC = {
    "StatusCode.INVALID_ARGUMENT": 400,
    "StatusCode.NOT_FOUND": 404,
    "StatusCode.UNIMPLEMENTED": 501,
    "StatusCode.UNAVAILABLE": 503,
    "StatusCode.DEADLINE_EXCEEDED": 504,
}


class TritonError(RuntimeError):
    """Base class of the errors a Triton call can raise."""


class TritonUnavailable(TritonError):
    """Triton cannot be reached or is not ready (answer 503 with Retry-After)."""


class TritonTimeout(TritonError):
    """Triton did not answer within the configured timeout."""


class TritonModelError(TritonError):
    """Triton answered with an error for a model (unknown model, model raised)."""

    def __init__(self, model: str, status: int, message: str) -> None:
        """Keep the model, HTTP-like status and Triton's message."""
        super().__init__(f"{model}: {message}")
        self.model = model
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Tensor:
    """One named input tensor: Triton datatype and a numpy array (batch dimension first)."""

    name: str
    datatype: str
    array: np.ndarray

    @property
    def shape(self) -> list[int]:
        """The tensor's shape."""
        return list(self.array.shape)


def bytes_column(name: str, values: list[str] | list[bytes]) -> Tensor:
    """A BYTES tensor of shape [n, 1] (one string per row)."""
    arr = np.empty((len(values), 1), dtype=object)
    arr[:, 0] = [v.encode() if isinstance(v, str) else v for v in values]
    return Tensor(name, "BYTES", arr)


def fp32(name: str, x: np.ndarray) -> Tensor:
    """An FP32 tensor (C-contiguous float32 copy only when needed)."""
    return Tensor(name, "FP32", np.ascontiguousarray(x, dtype=np.float32))


def _grpc_url(url: str) -> str:
    """``host:port`` from a URL that may carry a scheme."""
    return url.split("://", 1)[-1].rstrip("/")


# The admin key's gRPC metadata name: Triton prefixes the key of --grpc-restricted-protocol
# (over HTTP the header is plain ``triton-admin-key``).
GRPC_ADMIN_KEY = "triton-grpc-protocol-triton-admin-key"


class TritonClient:
    """Async client of Triton's gRPC API (KServe v2 over gRPC, binary tensors)."""

    def __init__(self, url: str, timeout_s: float = 10.0, admin_key: str | None = None) -> None:
        """``url`` is Triton's gRPC ``host:port``; ``admin_key`` is sent with repository-index
        reads (Triton's restricted model-repository protocol)."""
        self.url = _grpc_url(url)
        self.timeout_s = timeout_s
        self._admin = {GRPC_ADMIN_KEY: admin_key} if admin_key else None
        self._client: Any = None

    def _conn(self) -> Any:
        """The gRPC client, created in the running event loop on first use."""
        if self._client is None:
            from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
            from tritonclient.grpc.aio import InferenceServerClient

            self._client = InferenceServerClient(
                self.url,
                channel_args=[
                    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
                    # a restarted Triton is found again within a second, not after minutes
                    ("grpc.initial_reconnect_backoff_ms", 200),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                    # a fresh channel must not reuse the process-wide subchannel, which may
                    # still wait out its back-off after Triton came back
                    ("grpc.use_local_subchannel_pool", 1),
                ],
            )
        return self._client

    async def _reset(self) -> None:
        """Drop the channel (a fresh one connects at once: no reconnect back-off to wait)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken channel
                log.debug("closing the Triton channel: %s", exc)

    async def aclose(self) -> None:
        """Close the channel."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    def _typed(self, exc: Exception, model: str | None = None) -> TritonError:
        """Map a tritonclient error to a typed one."""
        status = str(getattr(exc, "status", lambda: "")() or "")
        message = exc.message() if hasattr(exc, "message") else str(exc)
        if status == "StatusCode.DEADLINE_EXCEEDED":
            return TritonTimeout(f"Triton at {self.url} did not answer in time ({message})")
        if status == "StatusCode.UNAVAILABLE" and (model is None or "not ready" not in message):
            return TritonUnavailable(f"Triton at {self.url} is unreachable ({message})")
        if model is None or "server is not ready" in str(message).lower():
            return TritonUnavailable(f"Triton at {self.url} answered {status}: {message}")
        return TritonModelError(model, _HTTP_OF_GRPC.get(status, 500), str(message))

    async def server_ready(self) -> bool:
        """True when Triton answers ready."""
        try:
            return bool(await self._conn().is_server_ready(client_timeout=self.timeout_s))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            await self._reset()
            return False

    async def model_ready(self, model: str, version: str | None = None) -> bool:
        """True when ``model`` (optionally one ``version``) is loaded and ready."""
        try:
            return bool(
                await self._conn().is_model_ready(
                    model, version or "", client_timeout=self.timeout_s
                )
            )
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    async def repository_index(self) -> list[dict[str, Any]]:
        """Every model in the repository with its version and state."""
        try:
            index = await self._conn().get_model_repository_index(
                headers=self._admin, as_json=True, client_timeout=self.timeout_s
            )
        except Exception as exc:  # noqa: BLE001 - typed below
            raise self._typed(exc) from exc
        return list(index.get("models", []))

    async def _call_infer(self, model: str, req: list, wanted: list | None) -> Any:
        """One infer call; when the channel is down, retry once on a fresh channel."""
        for attempt in (0, 1):
            try:
                return await self._conn().infer(
                    model, req, outputs=wanted, client_timeout=self.timeout_s
                )
            except Exception as exc:  # noqa: BLE001 - only UNAVAILABLE is retried
                status = str(getattr(exc, "status", lambda: "")() or "")
                if attempt or status != "StatusCode.UNAVAILABLE":
                    raise
                await self._reset()
        raise AssertionError("unreachable")

    async def infer(
        self, model: str, inputs: list[Tensor], outputs: list[str] | None = None
    ) -> dict[str, Any]:
        """Run one inference; ``{output name: numpy array}`` plus ``model_version``."""
        from tritonclient.grpc.aio import InferInput, InferRequestedOutput

        req = []
        for t in inputs:
            i = InferInput(t.name, t.shape, t.datatype)
            i.set_data_from_numpy(t.array)
            req.append(i)
        wanted = [InferRequestedOutput(n) for n in outputs] if outputs else None
        start = time.perf_counter()
        outcome = "error"
        try:
            try:
                res = await self._call_infer(model, req, wanted)
            except Exception as exc:  # noqa: BLE001 - typed below
                raise self._typed(exc, model) from exc
            outcome = "ok"
            response = res.get_response()
            out: dict[str, Any] = {o.name: res.as_numpy(o.name) for o in response.outputs}
            out["model_version"] = response.model_version
            return out
        finally:
            metrics.TRITON_LATENCY.labels(model=model, outcome=outcome).observe(
                time.perf_counter() - start
            )
