"""Model sync against real MLflow and Triton: new version served, old dropped, no failed request."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import httpx
import pytest

from secml.repository import (
    ABP_MODEL,
    DFP_MODEL,
    PLACEHOLDER_VERSION,
    read_index,
    read_meta,
    version_dirs,
)
from secml.settings import Settings
from serving.sync import (
    _prune_dfp,
    production_dfp,
    sync_all,
    sync_dfp,
    write_abp_version,
)

from .conftest import (
    DFP_USER,
    api_headers,
    duo_records,
    register_abp,
    train_abp_booster,
)

log = logging.getLogger(__name__)


def _triton_index(s: Settings) -> dict[str, list[tuple[str, str]]]:
    """Model -> [(version, state)] from Triton's repository index."""
    r = httpx.post(f"http://{s.triton_url}/v2/repository/index", json={}, timeout=10)
    r.raise_for_status()
    out: dict[str, list[tuple[str, str]]] = {}
    for m in r.json():
        out.setdefault(m["name"], []).append((m.get("version", ""), m.get("state", "")))
    return out


@pytest.mark.integration
def test_sync_serves_the_production_versions(synced: Settings, abp_production, dfp_production):
    repo = synced.triton_model_repository
    top = version_dirs(repo / ABP_MODEL)[-1]
    assert top > PLACEHOLDER_VERSION
    assert read_meta(repo / ABP_MODEL / str(top))["version"] == abp_production["version"]
    ready = [v for v, st in _triton_index(synced)[ABP_MODEL] if st == "READY"]
    assert ready == [str(top)]
    index = read_index(repo / DFP_MODEL)
    own, generic = dfp_production["own"], dfp_production["generic"]
    assert index[own.model_name] == own.version
    assert index[generic.model_name] == generic.version


@pytest.mark.integration
def test_sync_again_changes_nothing(synced: Settings):
    repo = synced.triton_model_repository
    before = version_dirs(repo / ABP_MODEL)
    results = {r.model: r for r in sync_all(synced)}
    assert not results[ABP_MODEL].changed
    assert not results[DFP_MODEL].changed
    assert version_dirs(repo / ABP_MODEL) == before


@pytest.mark.integration
def test_abp_alias_move_is_served_within_10s_with_no_failed_request(
    synced: Settings, gateway_server: Settings, abp_records, abp_production, _stack
):
    """The stack's sync service (``python -m serving.sync --poll``) follows the alias: traffic
    keeps flowing through the gateway while the alias moves, the new version answers within
    10 s of the move, no request fails."""
    records, labels = abp_records
    batch = records[:16]
    url = f"{gateway_server.gateway_url}/predict"
    body = {"detector": "abp", "source": "nvsmi", "records": batch}
    answers: list[tuple[float, int, str | None]] = []  # (time, status, version)
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30, headers=api_headers(gateway_server)) as c:
            while not stop.is_set():
                r = c.post(url, json=body)
                version = r.json()["results"][0]["version"] if r.status_code == 200 else None
                answers.append((time.monotonic(), r.status_code, version))

    old = abp_production["version"]
    booster = train_abp_booster(records, labels, seed=2)
    _stack.up(["sync"])  # the loop, as `make up` runs it
    t = threading.Thread(target=traffic)
    t.start()
    try:
        time.sleep(1.0)
        new = register_abp(booster, synced)  # registers, then moves the alias
        moved = time.monotonic()
        while time.monotonic() < moved + 30 and not any(v == new for _, _, v in answers):
            time.sleep(0.2)
        time.sleep(1.0)
        metrics_url = f"http://{synced.host}:{synced.sync_metrics_port}/metrics"
        deadline = time.monotonic() + 60  # the round ends once the old version has unloaded
        while time.monotonic() < deadline:
            metrics = httpx.get(metrics_url).text
            if f'serving_sync_runs_total{{model="{ABP_MODEL}",outcome="changed"}}' in metrics:
                break
            time.sleep(0.5)
        sync_pid = _stack.pid("sync")
        maps = Path(f"/proc/{sync_pid}/maps").read_text() if sync_pid else ""
    finally:
        stop.set()
        t.join(timeout=60)
        _stack.down(["sync"])  # later tests sync by hand
    # the loop loaded over gRPC in a child process: grpcio never entered its own memory
    assert sync_pid and "cygrpc" not in maps and "tritonclient" not in maps
    bad = [(round(at - moved, 2), st) for at, st, _ in answers if st != 200]
    assert answers and not bad, f"failed requests during the swap (s after the move, status): {bad}"
    versions = [v for _, _, v in answers]
    assert versions[0] == old and versions[-1] == new
    first_new = next(at for at, _, v in answers if v == new)
    log.info("new version served %.1f s after the alias move", first_new - moved)
    assert first_new - moved <= 10.0, f"new version served {first_new - moved:.1f}s after the move"
    # once the new version answered, the old one never came back
    assert old not in versions[versions.index(new) :]
    assert f'serving_sync_runs_total{{model="{ABP_MODEL}",outcome="changed"}} 1.0' in metrics
    repo = synced.triton_model_repository / ABP_MODEL
    top = version_dirs(repo)[-1]
    assert version_dirs(repo) == [PLACEHOLDER_VERSION, top]
    ready = [v for v, st in _triton_index(synced)[ABP_MODEL] if st == "READY"]
    assert ready == [str(top)]
    abp_production.update(version=new, booster=booster)  # later tests see it in production


@pytest.mark.integration
def test_dfp_alias_move_is_picked_up(synced: Settings, gateway_server: Settings, dfp_production):
    from mlflow import MlflowClient

    from secml.dfp.schema import process_records
    from secml.dfp.train import train_user

    from .conftest import TINY_AE

    own = dfp_production["own"]
    events = process_records(duo_records(seed=5), "duo")
    retrained = train_user(
        events[events["username"] == DFP_USER],
        "duo",
        DFP_USER,
        params={**TINY_AE, "seed": 7},
        settings=synced,
    )
    MlflowClient(synced.mlflow_tracking_uri).set_registered_model_alias(
        own.model_name, "production", retrained.version
    )
    result = sync_dfp(synced)
    assert f"{own.model_name}:{retrained.version}" in result.updated
    body = {"detector": "dfp", "source": "duo", "records": duo_records(n_per_user=3)[:3]}
    deadline = time.monotonic() + 30
    seen = None
    while time.monotonic() < deadline:
        r = httpx.post(
            f"{gateway_server.gateway_url}/predict",
            json=body,
            headers=api_headers(gateway_server),
            timeout=30,
        )
        assert r.status_code == 200, r.text
        seen = r.json()["results"][0]["model_version"]
        if seen == f"{own.model_name}:{retrained.version}":
            break
        time.sleep(0.5)
    assert seen == f"{own.model_name}:{retrained.version}"
    # the previous version stays on disk for one sync cycle, older ones are pruned
    users = synced.triton_model_repository / DFP_MODEL / "users" / own.model_name
    assert retrained.version in {p.name for p in users.iterdir()}
    dfp_production["own"] = retrained


@pytest.mark.integration
def test_an_unchanged_round_asks_mlflow_once(synced: Settings, abp_production, dfp_production):
    """The poll loop's round costs MLflow one request (every production alias from one search),
    over the loop's kept connection; the listing it reads is the per-detector one."""
    from serving.registry_rest import RegistryRest
    from serving.sync import PRODUCTION_ALIAS, dfp_part, triton_repo

    asked: list[str] = []
    pw = synced.mlflow_password
    http = httpx.Client(
        timeout=30,
        auth=(synced.mlflow_username, pw.get_secret_value()) if pw else None,
        event_hooks={"request": [lambda req: asked.append(req.url.path)]},
    )
    rest, triton = RegistryRest(synced, http=http), triton_repo(synced)
    try:
        sync_all(synced, rest, triton)  # whatever an earlier test left unsynced
        asked.clear()
        results = {r.model: r for r in sync_all(synced, rest, triton)}
        round_asked = list(asked)
        listing = rest.all_aliases(PRODUCTION_ALIAS)
        dfp = production_dfp(rest)
    finally:
        rest.close()
        triton.close()
    assert round_asked == ["/api/2.0/mlflow/registered-models/search"]
    assert not results[ABP_MODEL].changed and not results[ABP_MODEL].failed
    assert not results[DFP_MODEL].changed and not results[DFP_MODEL].failed
    assert listing["abp-nvsmi-xgb"] == abp_production["version"]
    assert dfp_part(listing) == dfp
    assert dfp[dfp_production["own"].model_name] == dfp_production["own"].version


@pytest.mark.integration
def test_production_listing_matches_registry(synced: Settings, dfp_production):
    """The REST listing sync reads is the mlflow client's (secml.dfp.registry)."""
    from mlflow import MlflowClient

    from secml.dfp.registry import production_versions
    from serving.registry_rest import RegistryRest

    rest = RegistryRest(synced)
    try:
        listing = production_dfp(rest)
        assert rest.version_by_alias("dfp-duo-no-such-user", "production") is None
    finally:
        rest.close()
    assert listing[dfp_production["generic"].model_name] == dfp_production["generic"].version
    client = MlflowClient(synced.mlflow_tracking_uri)
    assert listing == production_versions(client, "duo") | production_versions(client, "azure")


def test_sync_loop_imports_neither_prefect_nor_mlflow_nor_torch():
    """The poll loop's process stays light: the heavy clients load only where used."""
    import subprocess
    import sys

    code = (
        "import sys, serving.sync as s; s.poll; "
        "print(sorted(m for m in ('prefect', 'mlflow', 'torch', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    from serving.sync_flow import serving_sync  # the deployment's entry point

    assert serving_sync.name == "serving-sync"


def test_write_version_and_prune_on_files(tmp_repo, tmp_path):
    """File-level steps (no servers): staging rename, numbering, pruning keeps previous."""
    src = tmp_path / "model"
    src.mkdir()
    (src / "model.ubj").write_bytes(b"x")
    model_dir = tmp_repo / ABP_MODEL
    assert write_abp_version(model_dir, "abp-nvsmi-xgb", "4", src) == 2
    assert write_abp_version(model_dir, "abp-nvsmi-xgb", "5", src) == 3
    assert version_dirs(model_dir) == [1, 2, 3]
    assert json.loads((model_dir / "3" / "meta.json").read_text())["version"] == "5"
    assert (model_dir / "3" / "model.py").read_text() == (model_dir / "1" / "model.py").read_text()
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".staging")]
    users = tmp_repo / DFP_MODEL / "users"
    for name, v in (("dfp-duo-a", "1"), ("dfp-duo-a", "2"), ("dfp-duo-a", "3"), ("dfp-duo-b", "1")):
        (users / name / v).mkdir(parents=True)
    removed = _prune_dfp(tmp_repo / DFP_MODEL, keep=[{"dfp-duo-a": "2"}, {"dfp-duo-a": "3"}])
    assert sorted(removed) == ["dfp-duo-a:1", "dfp-duo-b:1"]
    assert sorted(p.name for p in (users / "dfp-duo-a").iterdir()) == ["2", "3"]
    assert not (users / "dfp-duo-b").exists()


@pytest.mark.integration
def test_sync_lists_active_users_models_and_the_scorer_preloads_them(synced, dfp_production):
    """Sync writes the models of the most recently active users (their stored history states,
    newest first; generic-scored users add nothing) and the dfp scorer loads them ahead of
    their requests, once."""
    from secml.dfp.history import UserState
    from secml.dfp.serve import DfpScorer
    from secml.repository import read_hot
    from secml.store import DetectionStore

    own = dfp_production["own"]
    store = DetectionStore(synced.store_url or "")
    store.save_user_states("duo", {"nobody-with-a-model@example.com": UserState().to_dict()})
    time.sleep(0.01)
    store.save_user_states("duo", {DFP_USER: UserState().to_dict()})
    sync_dfp(synced)
    repo = synced.triton_model_repository / DFP_MODEL
    hot = read_hot(repo)
    # the newest state first; the session's store may hold other tests' users after it
    assert hot[0] == own.model_name and len(hot) == len(set(hot))
    assert not any("nobody-with-a-model" in name for name in hot)
    scorer = DfpScorer(repo, device="cpu")
    loaded = scorer.preload()
    assert f"{own.model_name}:{own.version}" in loaded
    assert scorer.preload() == []  # resident already
