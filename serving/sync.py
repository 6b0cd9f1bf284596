"""Model sync: publish MLflow ``production`` versions into the Triton model repository.

ABP (``abp-nvsmi-xgb``): when the alias points at a version that is not served, the version's
files are written as a new Triton version directory ``<n>`` (with ``model.py`` and
``meta.json``) and the model is loaded through the repository API (explicit model control).
Triton loads the new version while the old one keeps serving and unloads the old one only
after the new one has loaded; sync waits until the new version answers ready and only then
removes the old directory. Requests never see a gap (tested under traffic).

DFP (``dfp-<source>-<user>`` / ``-generic``): thousands of per-user models are served by one
Triton model ``dfp`` (see ``secml.repository``). Sync copies each new production version to
``dfp/users/<name>/<version>/`` and then swaps ``users/index.json`` atomically; the ``dfp``
model re-reads the index within seconds. The previous version's files stay on disk until the
next sync so requests that already resolved it finish.

Run once after a training flow (``sync_all()``), on a schedule (``python -m serving.sync
--poll 30``) or as the Prefect flow ``serving-sync`` (``serving.sync_flow``). The poll loop
stays light, for itself and for MLflow: the registry is read over MLflow's REST API
(``serving.registry_rest``), one request a round (every production alias, ABP's and DFP's, from
one registered-model search) over connections kept for the loop's life, and neither Prefect,
the mlflow client nor torch is imported by it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from secml.repository import (
    ABP_MODEL,
    ABP_REGISTERED,
    DFP_MODEL,
    DFP_MODEL_FILES,
    HOT_FILE,
    INDEX_FILE,
    META_FILE,
    MODEL_SUBDIR,
    PLACEHOLDER_VERSION,
    USERS_DIR,
    find_autoencoder_dir,
    read_hot,
    read_index,
    read_meta,
    user_model_dir,
    version_dirs,
    write_json_atomic,
)
from secml.settings import Settings, get_settings
from secml.sql_read import fetch_all
from serving.registry_rest import RegistryRest

log = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"
READY_TIMEOUT_S = 120.0


class SyncError(RuntimeError):
    """A sync step failed; the message names the model, version and step."""


@dataclass
class SyncResult:
    """What one sync call did."""

    model: str
    changed: bool
    version: str | None = None
    triton_version: int | None = None
    message: str = ""
    updated: list[str] = field(default_factory=list)
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logs and flow results."""
        return asdict(self)


def _client(settings: Settings) -> RegistryRest:
    """The registry of the settings' tracking server, over REST."""
    return RegistryRest(settings)


def _download(client: RegistryRest, name: str, version: str, dst: Path) -> Path:
    """Download registered model ``name``/``version``'s files into ``dst``."""
    try:
        return client.download(name, version, dst)
    except Exception as exc:  # noqa: BLE001 - name the model and version in the error
        raise SyncError(f"downloading {name} version {version} from MLflow failed: {exc}") from exc


# the child process of TritonRepo.load: one repository-API load over gRPC; the arguments (and
# the admin key) come as JSON on stdin, Triton's refusal is the last line of stderr (exit 1)
GRPC_LOAD = """\
import json, sys
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
a = json.loads(sys.stdin.read())
client = grpcclient.InferenceServerClient(a["url"])
try:
    client.load_model(
        a["model"], config=a["config"], headers=a["headers"], client_timeout=a["timeout"]
    )
except InferenceServerException as exc:
    sys.exit(exc.message())
finally:
    client.close()
"""


class TritonRepo:
    """Triton's model repository API (explicit model control), synchronous."""

    def __init__(
        self,
        url: str,
        grpc_url: str,
        timeout_s: float = READY_TIMEOUT_S,
        admin_key: str | None = None,
    ) -> None:
        """``url`` is Triton's HTTP ``host:port``, ``grpc_url`` its gRPC ``host:port``;
        ``admin_key`` goes in the ``triton-admin-key`` header of loads (restricted API).

        Loads go over gRPC: an HTTP repository load holds one of Triton's HTTP worker threads
        for the whole load, stalling inference requests pinned to that thread
        (triton-inference-server/server#8958); the gRPC frontend has threads of its own.
        """
        base = url if url.startswith("http") else f"http://{url}"
        self.http = httpx.Client(base_url=base, timeout=timeout_s)
        self.grpc_url = grpc_url
        self.timeout_s = timeout_s
        # over HTTP the header is triton-admin-key; over gRPC Triton prefixes restricted keys
        self.admin_headers = (
            {"triton-admin-key": admin_key, "triton-grpc-protocol-triton-admin-key": admin_key}
            if admin_key
            else None
        )

    def close(self) -> None:
        """Close the HTTP client."""
        self.http.close()

    def reachable(self) -> bool:
        """True when Triton answers its liveness probe."""
        try:
            return self.http.get("/v2/health/live", timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def load(self, model: str, config: dict[str, Any] | None = None) -> None:
        """(Re)load ``model``; with ``config``, override its config.pbtxt for this load.

        The gRPC call runs in a short-lived child process (:data:`GRPC_LOAD`, its arguments and
        the admin key on its stdin): grpcio, numpy and tritonclient would otherwise stay in the
        poll loop's memory for good after its first swap (~30 MiB of its RSS), for a call made
        once per promotion; the child costs ~0.3 s of start-up then.
        """
        args = {
            "url": self.grpc_url,
            "model": model,
            "config": json.dumps(config) if config is not None else None,
            "headers": self.admin_headers,
            "timeout": self.timeout_s,
        }
        try:
            done = subprocess.run(
                [sys.executable, "-c", GRPC_LOAD],
                input=json.dumps(args),
                capture_output=True,
                text=True,
                timeout=self.timeout_s + 30,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SyncError(f"Triton did not load {model} in {self.timeout_s:.0f}s") from exc
        if done.returncode != 0:
            why = done.stderr.strip()[-800:] or f"exit status {done.returncode}"
            raise SyncError(f"Triton failed to load {model}: {why}")

    def version_ready(self, model: str, version: int) -> bool:
        """True when ``model`` version ``version`` answers ready."""
        r = self.http.get(f"/v2/models/{model}/versions/{version}/ready")
        return r.status_code == 200

    def states(self, model: str) -> dict[int, str]:
        """Version -> state of ``model`` in Triton's repository index."""
        r = self.http.post("/v2/repository/index", json={}, headers=self.admin_headers)
        r.raise_for_status()
        return {
            int(m["version"]): str(m.get("state"))
            for m in r.json()
            if m.get("name") == model and str(m.get("version", "")).isdigit()
        }

    def wait_unloaded(self, model: str, versions: list[int], timeout_s: float = 30.0) -> None:
        """Wait (bounded) until Triton has finished unloading ``versions`` (their files may
        only go then); the new version serves meanwhile."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            states = self.states(model)
            if not any(states.get(v) in ("UNLOADING", "LOADING") for v in versions):
                return
            time.sleep(0.2)
        log.warning("%s: versions %s still unloading after %.0fs", model, versions, timeout_s)

    def wait_ready(self, model: str, version: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Block until the version is ready or raise after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.version_ready(model, version):
                return
            time.sleep(0.2)
        raise SyncError(f"{model} version {version} not ready after {timeout_s:.0f}s")


# ---------------------------------------------------------------------------------- ABP
def served_abp(model_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """(highest Triton version, its sync metadata) in the repository."""
    versions = version_dirs(model_dir)
    if not versions:
        return 0, None
    top = versions[-1]
    return top, read_meta(model_dir / str(top))


def write_abp_version(
    model_dir: Path, name: str, version: str, source_dir: Path, run_id: str | None = None
) -> int:
    """Write ``source_dir`` (the model's files) as the next Triton version; return its number."""
    code = model_dir / str(PLACEHOLDER_VERSION) / "model.py"
    if not code.is_file():
        raise SyncError(f"{code} is missing: the repository has no {ABP_MODEL} model code")
    new = (version_dirs(model_dir) or [PLACEHOLDER_VERSION])[-1] + 1
    staging = model_dir / f".staging-{new}"  # not numeric: Triton ignores it
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copy2(code, staging / "model.py")
    shutil.copytree(source_dir, staging / MODEL_SUBDIR)
    meta = {
        "registered_model": name,
        "version": str(version),
        "run_id": run_id,
        "synced_at": datetime.now(UTC).isoformat(),
    }
    (staging / META_FILE).write_text(json.dumps(meta, indent=1))
    staging.rename(model_dir / str(new))
    return new


def swap_in(triton: TritonRepo, model: str, model_dir: Path, new: int) -> list[int]:
    """Serve version ``new``; the old version serves until ``new`` is ready, then goes.

    One repository-API load: Triton loads ``new`` (the on-disk policy is latest 1) while the
    old version keeps answering, and unloads the old one only once ``new`` has loaded. Sync
    then checks ``new`` answers ready and only then deletes the old directories.
    """
    old = [v for v in version_dirs(model_dir) if v != new]
    triton.load(model)
    triton.wait_ready(model, new)
    triton.wait_unloaded(model, old)
    still = [v for v in old if triton.version_ready(model, v)]
    if still:
        log.warning("%s: versions %s still ready next to %d", model, still, new)
    removed = []
    for v in old:
        if v != PLACEHOLDER_VERSION and v < new and v not in still:
            shutil.rmtree(model_dir / str(v), ignore_errors=True)
            removed.append(v)
    return removed


def triton_repo(settings: Settings) -> TritonRepo:
    """The repository client of the settings' Triton (with the admin key when set)."""
    key = settings.triton_admin_key.get_secret_value() if settings.triton_admin_key else None
    return TritonRepo(settings.triton_url or "", settings.triton_grpc_url or "", admin_key=key)


def _down_or_ready(triton: TritonRepo, model: str, version: int) -> bool:
    """True when ``model`` ``version`` answers ready or Triton does not answer at all (one
    request: nothing to reload then)."""
    try:
        return triton.version_ready(model, version)
    except httpx.HTTPError:
        return True


def sync_abp(
    settings: Settings | None = None,
    client: RegistryRest | None = None,
    listing: dict[str, str] | None = None,
    triton: TritonRepo | None = None,
) -> SyncResult:
    """Publish ``abp-nvsmi-xgb@production`` into Triton if it is not the version served.

    ``listing`` (registered model -> production version, from :meth:`RegistryRest.all_aliases`)
    saves asking MLflow; ``triton`` is a client kept by the caller (else one for this call).
    """
    settings = settings or get_settings()
    client = client or _client(settings)
    model_dir = settings.triton_model_repository / ABP_MODEL
    try:
        if listing is None:
            mv = client.version_by_alias(ABP_REGISTERED, PRODUCTION_ALIAS)
            version = None if mv is None else str(mv.version)
        else:
            mv, version = None, listing.get(ABP_REGISTERED)
    except Exception as exc:  # noqa: BLE001 - MLflow down: nothing to sync this round
        return SyncResult(ABP_MODEL, False, message=f"no {ABP_REGISTERED}@production: {exc}")
    if version is None:
        return SyncResult(ABP_MODEL, False, message=f"no {ABP_REGISTERED}@production yet")
    top, meta = served_abp(model_dir)
    own = triton is None
    triton = triton or triton_repo(settings)
    try:
        if meta is not None and str(meta.get("version")) == version:
            if not _down_or_ready(triton, ABP_MODEL, top):
                triton.load(ABP_MODEL)
                triton.wait_ready(ABP_MODEL, top)
            return SyncResult(ABP_MODEL, False, version, top, "already served")
        mv = mv or client.version(ABP_REGISTERED, version)  # the run id, only for a new version
        with tempfile.TemporaryDirectory(prefix="secml-sync-") as tmp:
            files = _download(client, ABP_REGISTERED, version, Path(tmp))
            new = write_abp_version(model_dir, ABP_REGISTERED, version, files, mv.run_id)
        if not triton.reachable():
            msg = f"wrote version {new}; Triton not reachable, it loads it at start"
            log.warning("%s: %s", ABP_MODEL, msg)
            return SyncResult(ABP_MODEL, True, version, new, msg)
        removed = swap_in(triton, ABP_MODEL, model_dir, new)
    finally:
        if own:
            triton.close()
    log.info("%s: serving %s:%s as Triton version %d", ABP_MODEL, ABP_REGISTERED, version, new)
    return SyncResult(ABP_MODEL, True, version, new, f"served; removed versions {removed}")


# ---------------------------------------------------------------------------------- DFP
DFP_SOURCES = ("duo", "azure")


def production_dfp(client: RegistryRest, sources: tuple[str, ...] = DFP_SOURCES) -> dict[str, str]:
    """Every ``dfp-<source>-*`` registered model with a production alias -> its version."""
    out: dict[str, str] = {}
    for source in sources:
        out |= client.aliases(f"dfp-{source}-", PRODUCTION_ALIAS)
    return out


def dfp_part(listing: dict[str, str], sources: tuple[str, ...] = DFP_SOURCES) -> dict[str, str]:
    """The ``dfp-<source>-*`` entries of a listing of every production alias."""
    prefixes = tuple(f"dfp-{source}-" for source in sources)
    return {name: v for name, v in listing.items() if name.startswith(prefixes)}


def _copy_autoencoder(downloaded: Path, dst: Path) -> None:
    """Copy only the autoencoder's files (model.json, state_dict.pt, and the generic model's
    risk.json) of a downloaded model."""
    src = find_autoencoder_dir(downloaded)
    staging = dst.parent / f".staging-{dst.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for f in DFP_MODEL_FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, staging / f)
    shutil.rmtree(dst, ignore_errors=True)
    staging.rename(dst)


def sync_dfp(
    settings: Settings | None = None,
    client: RegistryRest | None = None,
    listing: dict[str, str] | None = None,
) -> SyncResult:
    """Copy new DFP production versions under ``dfp/users`` and swap the index atomically."""
    settings = settings or get_settings()
    client = client or _client(settings)
    dfp_dir = settings.triton_model_repository / DFP_MODEL
    wanted = production_dfp(client) if listing is None else dict(listing)
    current = read_index(dfp_dir)
    updated = []
    with tempfile.TemporaryDirectory(prefix="secml-sync-") as tmp:
        for name, version in sorted(wanted.items()):
            dst = user_model_dir(dfp_dir, name, version)
            if current.get(name) == version and dst.is_dir():
                continue
            files = _download(client, name, version, Path(tmp) / name / version)
            _copy_autoencoder(files, dst)
            updated.append(f"{name}:{version}")
    removed = _prune_dfp(dfp_dir, keep=[current, wanted])
    if updated or removed or current != wanted:
        write_json_atomic(
            dfp_dir / USERS_DIR / INDEX_FILE,
            {"models": wanted, "synced_at": datetime.now(UTC).isoformat()},
        )
    hot = hot_models(settings, wanted)
    if hot is not None and hot != read_hot(dfp_dir):
        write_json_atomic(dfp_dir / USERS_DIR / HOT_FILE, {"models": hot})
    msg = f"{len(wanted)} production models, {len(updated)} new, {len(removed)} pruned"
    log.info("dfp: %s", msg)
    return SyncResult(DFP_MODEL, bool(updated) or current != wanted, None, 1, msg, updated)


_RECENT = 'SELECT source, "user" FROM user_state ORDER BY updated_at DESC LIMIT :n'


def hot_models(settings: Settings, served: dict[str, str]) -> list[str] | None:
    """The production models of the most recently active DFP users (the detections store's
    per-user states, newest first), at most ``dfp_model_cache_size``; None when the store
    cannot be read. Users scored by the generic model add nothing (it is always loaded)."""
    from secml.naming import user_to_model_name

    url = settings.store_url or ""
    if not url or not served:
        return None
    try:
        rows = fetch_all(url, _RECENT, {"n": 4 * settings.dfp_model_cache_size})
    except Exception as exc:  # noqa: BLE001 - no store yet, or down: keep the last list
        log.debug("recent DFP users not read: %s", exc)
        return None
    hot: list[str] = []
    for source, user in rows:
        try:
            name = user_to_model_name(str(source), str(user))
        except ValueError:
            continue
        if name in served and name not in hot:
            hot.append(name)
    return hot[: settings.dfp_model_cache_size]


def _prune_dfp(dfp_dir: Path, keep: list[dict[str, str]]) -> list[str]:
    """Remove user model versions that are neither current nor about to be (keeps previous)."""
    users = dfp_dir / USERS_DIR
    if not users.is_dir():
        return []
    kept = {(n, v) for listing in keep for n, v in listing.items()}
    removed = []
    for name_dir in users.iterdir():
        if not name_dir.is_dir() or name_dir.name.startswith("."):
            continue
        for vdir in name_dir.iterdir():
            if vdir.is_dir() and (name_dir.name, vdir.name) not in kept:
                shutil.rmtree(vdir, ignore_errors=True)
                removed.append(f"{name_dir.name}:{vdir.name}")
        if not any(name_dir.iterdir()):
            name_dir.rmdir()
    return removed


# ---------------------------------------------------------------------------------- all
def sync_all(
    settings: Settings | None = None,
    client: RegistryRest | None = None,
    triton: TritonRepo | None = None,
) -> list[SyncResult]:
    """Sync ABP and DFP from one listing of the registry's production aliases; a failure of
    one does not stop the other. ``client`` and ``triton`` are kept by the caller (the poll
    loop); without them, clients for this call only."""
    settings = settings or get_settings()
    own = client is None
    client = client or _client(settings)
    results = []
    try:
        try:
            listing: dict[str, str] | None = client.all_aliases(PRODUCTION_ALIAS)
            error = None
        except Exception as exc:  # noqa: BLE001 - MLflow down: said by each step below
            listing, error = None, exc
        if listing is None:
            log.error("sync step sync_dfp failed: %s", error)
            results += [
                SyncResult(ABP_MODEL, False, message=f"no {ABP_REGISTERED}@production: {error}"),
                SyncResult("dfp", False, message=str(error), failed=True),
            ]
        else:
            results.append(_step(sync_abp, settings, client, listing, triton))
            results.append(_step(sync_dfp, settings, client, dfp_part(listing)))
    finally:
        if own:
            client.close()
    return results


def _step(fn: Any, settings: Settings, *args: Any) -> SyncResult:
    """One detector's sync step; an error becomes a failed result naming the step."""
    try:
        return fn(settings, *args)
    except Exception as exc:  # noqa: BLE001 - report and carry on with the next detector
        log.error("sync step %s failed: %s", fn.__name__, exc)
        return SyncResult(fn.__name__.removeprefix("sync_"), False, message=str(exc), failed=True)


def poll(
    interval_s: float | None = None,
    settings: Settings | None = None,
    rounds: int | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Follow the MLflow aliases: sync every ``interval_s`` seconds (default
    ``settings.sync_poll_s``), ``rounds`` times or until ``stop`` is set."""
    from serving import metrics

    settings = settings or get_settings()
    interval_s = interval_s if interval_s is not None else settings.sync_poll_s
    stop = stop or threading.Event()
    client, triton = _client(settings), triton_repo(settings)  # kept: no reconnect a round
    n = 0
    try:
        while rounds is None or n < rounds:
            for r in sync_all(settings, client, triton):
                outcome = "failed" if r.failed else ("changed" if r.changed else "unchanged")
                metrics.SYNC_RUNS.labels(model=r.model, outcome=outcome).inc()
                if r.changed:
                    log.info("sync: %s", r.to_dict())
            metrics.SYNC_LAST.set_to_current_time()
            n += 1
            if (rounds is None or n < rounds) and stop.wait(interval_s):
                return
    finally:
        client.close()
        triton.close()


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m serving.sync [--poll [SECONDS]] [--metrics-port PORT]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--poll",
        type=float,
        nargs="?",
        const=0.0,
        default=None,
        help="follow the aliases: sync every N seconds (default settings.sync_poll_s), forever",
    )
    ap.add_argument("--metrics-port", type=int, default=None, help="serve /metrics on this port")
    args = ap.parse_args(argv)
    settings = get_settings()
    logging.basicConfig(level=settings.log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line for every poll's requests
    if args.poll is not None:
        if args.metrics_port:
            from prometheus_client import start_http_server

            start_http_server(args.metrics_port, addr=settings.host)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        poll(args.poll or None, settings, stop=stop)
        return 0
    results = sync_all()
    for r in results:
        log.info("%s", json.dumps(r.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
