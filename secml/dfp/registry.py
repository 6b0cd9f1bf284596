"""Which DFP model scores which user: production aliases from MLflow, models kept in an LRU cache.

The listing of ``production`` versions (``dfp-<source>-*``) is fetched from the registry at most
once per ``ttl_s``; loaded models are kept by ``(name, version)`` in a bounded LRU cache, so a
promotion is picked up after the next refresh and an unchanged model is never downloaded twice.
Never one registry call per event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from secml.dfp.model import AutoEncoder
from secml.naming import GENERIC_USER, user_to_model_name
from secml.settings import Settings, get_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

PRODUCTION_ALIAS = "production"


class NoModelError(LookupError):
    """Neither the user's own nor the generic production model exists."""


Loader = Callable[[str, str], AutoEncoder]


class ModelRegistry:
    """Production DFP models of one source, listed on a TTL and loaded through an LRU cache."""

    def __init__(
        self,
        source: str,
        tracking_uri: str | None = None,
        ttl_s: float | None = None,
        cache_size: int | None = None,
        device: str = "auto",
        loader: Loader | None = None,
        clock: Callable[[], float] = time.monotonic,
        settings: Settings | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.source = source
        self.tracking_uri = tracking_uri or settings.mlflow_tracking_uri
        self.ttl_s = settings.dfp_registry_ttl_s if ttl_s is None else ttl_s
        self.cache_size = settings.dfp_model_cache_size if cache_size is None else cache_size
        if self.cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {self.cache_size}")
        self.device = device
        self._loader = loader or self._download
        self._clock = clock
        self._lock = threading.RLock()
        self._listing: dict[str, str] = {}
        self._listed_at: float | None = None
        self._cache: OrderedDict[tuple[str, str], AutoEncoder] = OrderedDict()
        self.refreshes = 0
        self.loads = 0

    # ------------------------------------------------------------------ listing
    def _client(self) -> MlflowClient:
        """A client of this registry's tracking server."""
        from mlflow import MlflowClient

        return MlflowClient(self.tracking_uri)

    def _fetch_listing(self) -> dict[str, str]:
        """Ask MLflow for every ``dfp-<source>-*`` model's ``production`` version."""
        return production_versions(self._client(), self.source)

    def production_models(self, force: bool = False) -> dict[str, str]:
        """Model name -> production version, refreshed when older than ``ttl_s``."""
        with self._lock:
            now = self._clock()
            stale = self._listed_at is None or now - self._listed_at >= self.ttl_s
            if force or stale:
                self._listing = self._fetch_listing()
                self._listed_at = now
                self.refreshes += 1
                live = set(self._listing.items())
                for key in [k for k in self._cache if k not in live]:
                    del self._cache[key]
                log.debug("registry listing for %s: %d models", self.source, len(self._listing))
            return dict(self._listing)

    # ------------------------------------------------------------------ models
    def _download(self, name: str, version: str) -> AutoEncoder:
        """Fetch one model version from MLflow."""
        from secml.dfp.train import load_version

        return load_version(name, version, device=self.device, tracking_uri=self.tracking_uri)

    def load(self, name: str, version: str) -> AutoEncoder:
        """The model ``name``/``version``, from the LRU cache or freshly loaded."""
        key = (name, str(version))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        model = self._loader(name, str(version))
        with self._lock:
            self.loads += 1
            self._cache[key] = model
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                evicted, _ = self._cache.popitem(last=False)
                log.debug("evicted %s:%s from the model cache", *evicted)
        return model

    def resolve(self, user: str) -> tuple[str, str]:
        """(model name, version) that scores ``user``: their own production model, else generic."""
        listing = self.production_models()
        own = user_to_model_name(self.source, user)
        if own in listing:
            return own, listing[own]
        generic = user_to_model_name(self.source, GENERIC_USER)
        if generic in listing:
            return generic, listing[generic]
        raise NoModelError(
            f"no production model for user {user!r} of source {self.source!r} and no "
            f"{generic!r} production model: train one (dfp-train) before inference"
        )

    def model_for_user(self, user: str) -> tuple[AutoEncoder, str]:
        """The model that scores ``user`` and its ``<name>:<version>`` label."""
        name, version = self.resolve(user)
        return self.load(name, version), f"{name}:{version}"

    def cached(self) -> list[tuple[str, str]]:
        """Keys of loaded models, least recently used first."""
        with self._lock:
            return list(self._cache)


_registries: dict[tuple[str, str | None], ModelRegistry] = {}
_registries_lock = threading.Lock()


def get_registry(source: str, settings: Settings | None = None) -> ModelRegistry:
    """The process-wide registry of ``source`` for the current tracking URI."""
    settings = settings or get_settings()
    key = (source, settings.mlflow_tracking_uri)
    with _registries_lock:
        if key not in _registries:
            _registries[key] = ModelRegistry(source, settings=settings)
        return _registries[key]


def production_versions(client: Any, source: str) -> dict[str, str]:
    """Every ``dfp-<source>-*`` registered model with a ``production`` alias -> its version."""
    prefix = f"dfp-{source}-"
    out: dict[str, str] = {}
    token = None
    while True:
        page = client.search_registered_models(
            filter_string=f"name LIKE '{prefix}%'", max_results=1000, page_token=token
        )
        for rm in page:
            version = (rm.aliases or {}).get(PRODUCTION_ALIAS)
            if version is not None and rm.name.startswith(prefix):
                out[rm.name] = str(version)
        token = page.token
        if not token:
            break
    return out
