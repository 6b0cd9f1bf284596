"""Clients the pages share, created once per process (``st.cache_resource``), never per rerun."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import streamlit as st

from secml.settings import Settings, get_settings

log = logging.getLogger(__name__)


def settings() -> Settings:
    """The platform settings (cached by ``get_settings``)."""
    return get_settings()


@st.cache_resource(show_spinner=False)
def store(url: str) -> Any:
    """The detections store at ``url``."""
    from secml.store import DetectionStore

    return DetectionStore(url)


@st.cache_resource(show_spinner=False)
def mlflow(tracking_uri: str) -> Any:
    """An MLflow client for ``tracking_uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@st.cache_resource(show_spinner=False)
def http() -> httpx.Client:
    """A pooled HTTP client for Prometheus and health checks."""
    return httpx.Client(timeout=10.0)


def prefect(api_url: str) -> Any:
    """A synchronous Prefect client for ``api_url`` (use as a context manager)."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url, httpx_settings={"timeout": 15.0})


def current_user() -> str:
    """The signed-in analyst's name ('' when nobody is signed in)."""
    return str(st.session_state.get("user", ""))


def _close_producer(producer: Any) -> None:
    """Close a producer dropped from the cache (flushes what it buffers, up to 5 s)."""
    producer.close(timeout=5)


@st.cache_resource(show_spinner=False, on_release=_close_producer)
def kafka_producer(bootstrap_servers: str) -> Any:
    """A Kafka producer for the control topic, one per process (not cached while it fails)."""
    from training.producer import make_producer

    return make_producer(settings())
