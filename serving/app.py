"""The FastAPI gateway: ``POST /predict`` validated here, scored by Triton, anomalies stored.

Run with ``uvicorn serving.app:app``. ``/health`` is liveness, ``/ready`` checks Triton and the
detections store, ``/metrics`` serves the instrumentator's ``http_*`` families plus the
``gateway_*`` metrics, and the OpenAPI UI is at ``/docs``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import anyio
import orjson
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_fastapi_instrumentator import Instrumentator
from pydantic import BaseModel, Field

from secml.repository import NOT_SYNCED
from secml.settings import Settings, get_settings
from secml.store import DetectionStore, StoreError
from serving import decode, metrics, schemas
from serving.detectors import DETECTORS, DetectorSpec, DictRecords, bounded_record, known_pairs
from serving.schemas import PredictResponse, Problem, ValidationErrors
from serving.triton import (
    TritonClient,
    TritonModelError,
    TritonTimeout,
    TritonUnavailable,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
STORE_TIMEOUT_S = 10.0


class Health(BaseModel):
    """Liveness answer."""

    status: str


class Readiness(BaseModel):
    """Readiness answer: which dependency is reachable."""

    status: str
    triton: bool
    store: bool
    models: list[str] = Field(default_factory=list)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the Triton connection pool and the store; close them on shutdown."""
    s = get_settings()
    key = s.triton_admin_key.get_secret_value() if s.triton_admin_key else None
    app.state.triton = TritonClient(
        s.triton_grpc_url or "", timeout_s=s.triton_timeout_s, admin_key=key
    )
    app.state.store = None
    try:
        yield
    finally:
        await app.state.triton.aclose()
        if app.state.store is not None:
            app.state.store.close()


app = FastAPI(
    title="secml gateway",
    version="0.1.0",
    description="Scores security records with the DFP and ABP detectors served by Triton.",
    lifespan=lifespan,
)
Instrumentator(excluded_handlers=["/metrics"]).instrument(app).expose(app, include_in_schema=False)


# The request dependencies are coroutines: FastAPI runs a plain ``def`` dependency in its
# thread pool, and three thread hops cost a batch-1 request a sixth of the gateway's CPU
# (bench_serving P2: 0.50x -> 0.60x of the bare app's req/s).
async def get_triton(request: Request) -> TritonClient:
    """The process's Triton client."""
    return request.app.state.triton


def get_store(request: Request) -> DetectionStore:
    """The process's detections store (connected on first use)."""
    store = request.app.state.store
    url = get_settings().store_url or ""
    if store is None or store.url != url:
        store = DetectionStore(url)
        request.app.state.store = store
    return store


async def require_api_key(
    x_api_key: Annotated[str | None, Header(description="the gateway API key")] = None,
) -> None:
    """Reject a missing or wrong ``X-API-Key`` with 401."""
    expected = get_settings().gateway_api_key.get_secret_value()
    if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected.encode()):
        metrics.REQUEST_ERRORS.labels(status="401").inc()
        raise HTTPException(
            status_code=401,
            detail="missing or invalid X-API-Key header",
            headers={"WWW-Authenticate": "ApiKey"},
        )


async def _settings() -> Settings:
    """The process's settings (cached by ``get_settings``)."""
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]
TritonDep = Annotated[TritonClient, Depends(get_triton)]


def _unavailable(detail: str, status: int = 503) -> HTTPException:
    """A 503/504 telling the client when to retry."""
    metrics.REQUEST_ERRORS.labels(status=str(status)).inc()
    return HTTPException(
        status_code=status, detail=detail, headers={"Retry-After": str(RETRY_AFTER_S)}
    )


@app.get("/health", response_model=Health, tags=["ops"])
async def health() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@app.get("/ready", response_model=Readiness, tags=["ops"], responses={503: {"model": Readiness}})
async def ready(request: Request, triton: TritonDep) -> JSONResponse:
    """Readiness: Triton is ready and the detections store answers."""
    triton_ok = await triton.server_ready()
    models: list[str] = []
    if triton_ok:
        try:
            index = await triton.repository_index()
            models = sorted(m["name"] for m in index if m.get("state") == "READY")
        except (TritonUnavailable, TritonTimeout):
            triton_ok = False
    try:
        store = get_store(request)
        with anyio.fail_after(5):
            store_ok = await anyio.to_thread.run_sync(store.ping)
    except Exception as exc:  # noqa: BLE001 - any failure means "store not ready"
        log.warning("store not ready: %s", exc)
        store_ok = False
    body = Readiness(
        status="ready" if triton_ok and store_ok else "not ready",
        triton=triton_ok,
        store=store_ok,
        models=models,
    )
    return JSONResponse(body.model_dump(), status_code=200 if triton_ok and store_ok else 503)


@app.get(
    "/models",
    tags=["predict"],
    responses={503: {"description": "Triton is unavailable; see Retry-After", "model": Problem}},
)
async def models(triton: TritonDep) -> dict[str, Any]:
    """Known detector/source pairs and the Triton models that are loaded."""
    try:
        index = await triton.repository_index()
    except (TritonUnavailable, TritonTimeout) as exc:
        raise _unavailable(str(exc)) from exc
    return {"known": known_pairs(), "triton": index}


def _lookup(detector: str, source: str) -> DetectorSpec:
    """The spec for (detector, source) or 404 listing the known pairs."""
    spec = DETECTORS.get((detector, source))
    if spec is None:
        metrics.REQUEST_ERRORS.labels(status="404").inc()
        raise HTTPException(
            status_code=404,
            detail={
                "message": f"unknown detector/source {detector!r}/{source!r}",
                "known": known_pairs(),
            },
        )
    return spec


def _invalid(errors: list[dict[str, Any]]) -> HTTPException:
    """422 with FastAPI's error shape: each error's loc names the body path."""
    metrics.REQUEST_ERRORS.labels(status="422").inc()
    return HTTPException(status_code=422, detail=errors)


def _body(raw: bytes) -> tuple[str, str, list[dict[str, Any]]]:
    """(detector, source, records) of a request body decoded with orjson; 400 / 422 name
    what is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        metrics.REQUEST_ERRORS.labels(status="400").inc()
        raise HTTPException(
            status_code=400, detail=f"body is not JSON: {exc.msg} at character {exc.pos}"
        ) from None
    if not isinstance(body, dict):
        raise _invalid(
            [{"loc": ["body"], "msg": "expected a JSON object", "type": "model_attributes_type"}]
        )
    errors = []
    for key in ("detector", "source"):
        v = body.get(key)
        if not isinstance(v, str) or not 1 <= len(v) <= 32:
            msg = "required" if v is None else "must be a string of 1 to 32 characters"
            errors.append({"loc": ["body", key], "msg": f"field {key!r} {msg}", "type": "value"})
    records = body.get("records")
    if not isinstance(records, list):
        what = "required" if records is None else "must be a list of records"
        errors.append(
            {"loc": ["body", "records"], "msg": f"field 'records' {what}", "type": "list"}
        )
    else:
        errors += [
            {
                "loc": ["body", "records", i],
                "msg": f"record {i}: expected a JSON object, got {type(r).__name__}",
                "type": "model_attributes_type",
            }
            for i, r in enumerate(records)
            if not isinstance(r, dict)
        ][:50]
    if errors:
        raise _invalid(errors)
    return body["detector"], body["source"], records


def _decode(raw: bytes) -> tuple[str, str, Any]:
    """(detector, source, records) of a body: nvidia-smi records through msgspec straight into
    the featurizer's columns; anything else, or anything that path cannot read, in full with
    orjson (``_body``), whose checks name what is wrong."""
    try:
        _, _, columns = decode.abp_body(raw)
        if columns is not None:
            return "abp", "nvsmi", columns
    except decode.Undecodable:
        pass
    detector, source, records = _body(raw)
    return detector, source, DictRecords(records)


class _Timing:
    """Milliseconds per step of one request, for the ``Server-Timing`` answer header."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        """End ``step`` now."""
        now = time.perf_counter()
        self.steps.append((step, 1000 * (now - self.last)))
        self.last = now

    def header(self) -> str:
        """``read;dur=1.2, decode;dur=30.1, ...``."""
        return ", ".join(f"{k};dur={v:.1f}" for k, v in self.steps)


def _prepare(spec: DetectorSpec, records: Any) -> tuple[Any, list[str]]:
    """The model's input tensors and the records' event ids; 422 naming each bad record's
    index and field."""
    prepared = spec.prepare(records)
    if prepared.errors:
        raise _invalid(
            [
                {
                    "loc": ["body", "records", e.index, e.field],
                    "msg": str(e),
                    "type": "value_error",
                }
                for e in prepared.errors
            ]
        )
    return prepared, prepared.ids if prepared.ids is not None else spec.ids(records)


async def _model_error(
    spec: DetectorSpec, triton: TritonClient, exc: TritonModelError
) -> HTTPException:
    """Map a Triton model error: not loaded or not synced -> 404 listing what is served."""
    msg = exc.message
    not_loaded = "unknown model" in msg.lower() or "not found" in msg.lower()
    if not_loaded or NOT_SYNCED in msg:
        try:
            index = await triton.repository_index()
            served = sorted(m["name"] for m in index if m.get("state") == "READY")
        except (TritonUnavailable, TritonTimeout):
            served = []
        metrics.REQUEST_ERRORS.labels(status="404").inc()
        reason = (
            "has no production version synced yet (train and promote it, then run serving.sync)"
            if NOT_SYNCED in msg
            else "is not loaded in Triton"
        )
        return HTTPException(
            status_code=404,
            detail={
                "message": f"model {spec.triton_model!r} ({spec.detector}/{spec.source}) {reason}",
                "known": known_pairs(),
                "loaded_models": served,
            },
        )
    if exc.status >= 500:
        return _unavailable(f"Triton model {spec.triton_model!r} failed: {msg}")
    metrics.REQUEST_ERRORS.labels(status="422").inc()
    return HTTPException(status_code=422, detail=f"model {spec.triton_model!r} rejected: {msg}")


def _user_lock(request: Request, source: str, user: str) -> asyncio.Lock:
    """The lock that serialises this process's requests for one DFP user."""
    locks = getattr(request.app.state, "user_locks", None)
    if locks is None:
        locks = request.app.state.user_locks = weakref.WeakValueDictionary()
    key = (source, user)
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock


async def _store_call(request: Request, method: str, *args: Any) -> Any:
    """Call a detections-store method in a thread; 503 when the store is down or slow."""
    try:
        store = get_store(request)
        with anyio.fail_after(STORE_TIMEOUT_S):
            return await anyio.to_thread.run_sync(getattr(store, method), *args)
    except Exception as exc:  # noqa: BLE001 - database down, timeout: ask the client to retry
        log.error("detections store unavailable (%s): %s", method, exc)
        raise _unavailable(f"detections store unavailable: {type(exc).__name__}") from exc


async def _store(request: Request, spec: DetectorSpec, records: Any, results: list[dict]) -> None:
    """Write every anomaly (a bounded copy of its record) to the detections store; set each
    result's detection_id."""
    max_bytes = get_settings().gateway_record_max_bytes
    rows, where = [], []
    for i, res in enumerate(results):
        if not res["anomaly"]:
            continue
        rec = records.record(i)  # decoded in full only here, for the anomalies
        details = dict(res["details"])
        if res.get("top_features") is not None:
            details["top_features"] = res["top_features"]
        rows.append(
            {
                "detector": spec.detector,
                "source": spec.source,
                "event_id": res["event_id"],
                "record": bounded_record(rec, max_bytes, spec.keep),
                "score": res["score"],
                "is_anomaly": True,
                "model_version": res["model_version"],
                "user": res.get("user"),
                "event_time": res.get("event_time"),
                "details": details,
            }
        )
        where.append(res)
    if not rows:
        return
    try:
        store = get_store(request)
        with anyio.fail_after(STORE_TIMEOUT_S):
            ids = await anyio.to_thread.run_sync(store.add_detections, rows)
    except StoreError as exc:
        log.error("detections store rejected rows: %s", exc)
        raise _unavailable(f"detections store rejected the detections: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - database down, timeout: ask the client to retry
        log.error("detections store unavailable: %s", exc)
        raise _unavailable(f"detections store unavailable: {type(exc).__name__}") from exc
    for res, i in zip(where, ids, strict=True):
        res["detection_id"] = i
    metrics.DETECTIONS_STORED.labels(detector=spec.detector, source=spec.source).inc(len(ids))


def _observe(spec: DetectorSpec, results: list[dict[str, Any]]) -> None:
    """Count predictions, observe scores and record the model versions in service."""
    anomalies = sum(1 for r in results if r["anomaly"])
    if anomalies:
        metrics.PREDICTIONS.labels(spec.detector, spec.source, "anomaly").inc(anomalies)
    if len(results) > anomalies:
        metrics.PREDICTIONS.labels(spec.detector, spec.source, "normal").inc(
            len(results) - anomalies
        )
    observe = metrics.ANOMALY_SCORE.labels(spec.detector, spec.source).observe
    for r in results:
        observe(r["score"])
    seen = {(r["model"], r["version"]) for r in results}
    for model, version in seen:
        if spec.detector == "dfp" and not model.endswith("-generic"):
            model = f"dfp-{spec.source}-<user>"  # one series per user would explode cardinality
            version = "per-user"
        metrics.set_model_version(spec.detector, spec.source, model, version)


_PROBLEM = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_RETRY = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not JSON", "model": Problem},
    401: {"description": "bad or missing X-API-Key", "model": Problem},
    404: {"description": "unknown detector/source or model not loaded", "model": Problem},
    413: {"description": "too many records", "model": Problem},
    422: {
        "description": "invalid body or record: names the record index and the field",
        "model": ValidationErrors,
    },
    503: {
        "description": "Triton or the store is unavailable; see Retry-After",
        "model": Problem,
        "headers": _RETRY,
    },
    504: {
        "description": "Triton did not answer in time; see Retry-After",
        "model": Problem,
        "headers": _RETRY,
    },
}
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [{"$ref": f"#/components/schemas/{m.__name__}"} for m in schemas.REQUESTS],
                "discriminator": {
                    "propertyName": "source",
                    "mapping": {
                        "nvsmi": "#/components/schemas/AbpRequest",
                        "duo": "#/components/schemas/DuoRequest",
                        "azure": "#/components/schemas/AzureRequest",
                    },
                },
            },
            "example": {
                "detector": "dfp",
                "source": "duo",
                "records": [
                    {
                        "timestamp": 1763000000,
                        "user": {"name": "alice@example.com"},
                        "result": "success",
                    }
                ],
            },
        }
    },
}


@app.post(
    "/predict",
    response_model=PredictResponse,
    tags=["predict"],
    dependencies=[Depends(require_api_key)],
    responses=PREDICT_RESPONSES,
    openapi_extra={"requestBody": _REQUEST_BODY},
)
async def predict(request: Request, triton: TritonDep, settings: SettingsDep) -> Response:
    """Score raw records with the detector's production model; store every anomaly.

    The body is one of the typed requests (ABP on nvidia-smi, DFP on Duo or Azure AD records).
    """
    timing = _Timing()
    raw = await request.body()
    timing.mark("read")
    if len(raw) > 65536:  # decoding megabytes would hold up the event loop
        detector, source, records = await anyio.to_thread.run_sync(_decode, raw)
    else:
        detector, source, records = _decode(raw)
    timing.mark("decode")
    spec = _lookup(detector, source)
    n = len(records)
    if n == 0:
        raise _invalid(
            [{"loc": ["body", "records"], "msg": "at least one record is required", "type": "list"}]
        )
    if n > settings.gateway_max_batch:
        metrics.REQUEST_ERRORS.labels(status="413").inc()
        raise HTTPException(
            status_code=413,
            detail=f"records: {n} records exceed the batch limit of {settings.gateway_max_batch}",
        )
    metrics.BATCH_RECORDS.labels(detector=spec.detector).observe(n)
    if n > 16:  # featurizing and hashing a big batch would hold up the event loop
        prepared, ids = await anyio.to_thread.run_sync(_prepare, spec, records)
    else:
        prepared, ids = _prepare(spec, records)
    timing.mark("prepare")
    inputs = prepared.inputs
    users = spec.users(prepared) if spec.stateful and spec.users else []
    async with AsyncExitStack() as held:
        for user in users:  # one request at a time per user: its state is read, then written
            await held.enter_async_context(_user_lock(request, spec.source, user))
        new_states: dict[str, Any] = {}
        if spec.stateful and spec.featurize:
            states = await _store_call(request, "load_user_states", spec.source, users)
            if n > 16:  # the history features of a big batch would hold up the event loop
                inputs, new_states = await anyio.to_thread.run_sync(
                    spec.featurize, prepared, states
                )
            else:
                inputs, new_states = spec.featurize(prepared, states)
            timing.mark("state")
        try:
            async with asyncio.timeout(settings.triton_timeout_s + 1):
                out = await triton.infer(spec.triton_model, inputs, outputs=prepared.outputs)
                timing.mark("triton")
        except (TimeoutError, TritonTimeout) as exc:
            detail = f"Triton did not answer within {settings.triton_timeout_s}s"
            raise _unavailable(detail, 504) from exc
        except TritonUnavailable as exc:
            raise _unavailable(f"Triton is unavailable: {exc}") from exc
        except TritonModelError as exc:
            raise await _model_error(spec, triton, exc) from exc
        # the users' new states are stored only once Triton has scored them (a retried
        # request counts once), while the answers are built
        save = (
            asyncio.create_task(_store_call(request, "save_user_states", spec.source, new_states))
            if new_states
            else None
        )
        try:
            if n > 16 and save is not None:
                results = await anyio.to_thread.run_sync(spec.answer, records, out, prepared)
            else:
                results = spec.answer(records, out, prepared)
        except (ValueError, KeyError) as exc:
            detail = f"Triton model {spec.triton_model!r} answered badly: {exc}"
            raise _unavailable(detail) from exc
        finally:
            if save is not None:
                await save
    for eid, res in zip(ids, results, strict=True):
        res["event_id"] = eid
        res["detection_id"] = None
    timing.mark("answer")
    await _store(request, spec, records, results)
    timing.mark("store")
    _observe(spec, results)
    for r in results:  # stored with the detection, not part of the answer
        del r["user"], r["event_time"]
    body = {
        "detector": spec.detector,
        "source": spec.source,
        "n_records": n,
        "n_anomalies": sum(r["anomaly"] for r in results),
        "results": results,
    }
    content = orjson.dumps(body)
    timing.mark("encode")
    return Response(
        content, media_type="application/json", headers={"Server-Timing": timing.header()}
    )


def custom_openapi() -> dict[str, Any]:
    """The OpenAPI document with the typed request schemas in its components."""
    if app.openapi_schema:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    for model in schemas.REQUESTS:
        doc = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
        components.update(doc.pop("$defs", {}))
        components[model.__name__] = doc
    app.openapi_schema = spec
    return spec


app.openapi = custom_openapi  # type: ignore[method-assign]
