"""The MLflow registry reads ``serving.sync`` makes, over MLflow's REST API with httpx.

The sync loop runs for the life of the stack; importing the ``mlflow`` client for a few GETs
and one download per promotion would cost it most of its memory. Model files come through the
server's artifact proxy (``mlflow-artifacts:``, as ``make up`` and compose run MLflow); any other
artifact store falls back to the ``mlflow`` client for that download only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from secml.settings import Settings

log = logging.getLogger(__name__)

PAGE_SIZE = 1000


class RegistryError(RuntimeError):
    """MLflow answered an error (the message names the endpoint and the answer)."""

    def __init__(self, endpoint: str, status: int, text: str) -> None:
        """Keep the HTTP status; ``missing`` is True for MLflow's RESOURCE_DOES_NOT_EXIST."""
        super().__init__(f"MLflow {endpoint} answered {status}: {text[:300]}")
        self.status = status
        self.missing = status == 404 or "RESOURCE_DOES_NOT_EXIST" in text


@dataclass(frozen=True)
class ModelVersion:
    """The fields of a registered model version that sync reads."""

    name: str
    version: str
    run_id: str | None


class RegistryRest:
    """Registry reads and model downloads of one tracking server."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        """Talk to ``settings.mlflow_tracking_uri`` as the writer account (when auth is on)."""
        self.settings = settings
        self.base = (settings.mlflow_tracking_uri or "").rstrip("/")
        pw = settings.mlflow_password
        auth = (settings.mlflow_username, pw.get_secret_value()) if pw else None
        self.http = http or httpx.Client(timeout=30.0, auth=auth)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()

    def _get(self, endpoint: str, **params: Any) -> dict[str, Any]:
        """GET ``/api/2.0/<endpoint>`` as JSON; ``RegistryError`` on an error answer."""
        query = {k: v for k, v in params.items() if v is not None}
        r = self.http.get(f"{self.base}/api/2.0/{endpoint}", params=query)
        if r.status_code >= 400:
            raise RegistryError(endpoint, r.status_code, r.text)
        return r.json()

    def version_by_alias(self, name: str, alias: str) -> ModelVersion | None:
        """The version ``alias`` of registered model ``name`` points at (None: no such alias)."""
        try:
            mv = self._get("mlflow/registered-models/alias", name=name, alias=alias)
        except RegistryError as exc:
            if exc.missing:
                return None
            raise
        v = mv["model_version"]
        return ModelVersion(v["name"], str(v["version"]), v.get("run_id") or None)

    def version(self, name: str, version: str) -> ModelVersion:
        """Registered model ``name``'s version ``version``."""
        v = self._get("mlflow/model-versions/get", name=name, version=version)["model_version"]
        return ModelVersion(v["name"], str(v["version"]), v.get("run_id") or None)

    def aliases(self, prefix: str, alias: str) -> dict[str, str]:
        """Every registered model named ``prefix*`` that has ``alias`` -> its version."""
        return self._search_aliases(alias, prefix)

    def all_aliases(self, alias: str) -> dict[str, str]:
        """Every registered model that has ``alias`` -> its version: one request per
        ``PAGE_SIZE`` models (the sync loop's whole poll of the registry)."""
        return self._search_aliases(alias, None)

    def _search_aliases(self, alias: str, prefix: str | None) -> dict[str, str]:
        out: dict[str, str] = {}
        token = None
        while True:
            page = self._get(
                "mlflow/registered-models/search",
                filter=f"name LIKE '{prefix}%'" if prefix else None,
                max_results=PAGE_SIZE,
                page_token=token,
            )
            for m in page.get("registered_models", []):
                got = {a["alias"]: str(a["version"]) for a in m.get("aliases", [])}
                if alias in got and m["name"].startswith(prefix or ""):
                    out[m["name"]] = got[alias]
            token = page.get("next_page_token")
            if not token:
                return out

    def download(self, name: str, version: str, dst: Path) -> Path:
        """Download the files of ``name`` version ``version`` into ``dst``; return ``dst``."""
        uri = self._get("mlflow/model-versions/get-download-uri", name=name, version=version)[
            "artifact_uri"
        ]
        dst.mkdir(parents=True, exist_ok=True)
        if not uri.startswith("mlflow-artifacts:"):
            return self._download_with_client(uri, dst)
        root = urlparse(uri).path.strip("/")
        n = self._fetch_tree(root, dst)
        if n == 0:
            raise RegistryError(f"mlflow-artifacts {root}", 404, "no files")
        log.debug("downloaded %s:%s (%d files) into %s", name, version, n, dst)
        return dst

    def _fetch_tree(self, path: str, dst: Path) -> int:
        """Copy every file under artifact ``path`` into ``dst``; the number of files."""
        listing = self._get("mlflow-artifacts/artifacts", path=path).get("files", [])
        n = 0
        for f in listing:
            name = f["path"]
            if "/" in name or name in ("", ".", ".."):
                raise RegistryError(f"mlflow-artifacts {path}", 500, f"bad file name {name!r}")
            if f.get("is_dir"):
                (dst / name).mkdir(exist_ok=True)
                n += self._fetch_tree(f"{path}/{name}", dst / name)
                continue
            url = f"{self.base}/api/2.0/mlflow-artifacts/artifacts/{path}/{name}"
            with self.http.stream("GET", url) as r:
                if r.status_code >= 400:
                    raise RegistryError(f"{path}/{name}", r.status_code, r.read().decode())
                with (dst / name).open("wb") as out:
                    for chunk in r.iter_bytes():
                        out.write(chunk)
            n += 1
        return n

    def _download_with_client(self, uri: str, dst: Path) -> Path:
        """An artifact store the server does not proxy: the mlflow client downloads it."""
        import mlflow

        mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
