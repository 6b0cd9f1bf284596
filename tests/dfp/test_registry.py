"""DFP model registry: TTL refresh of the production listing, LRU model cache, fallback."""

from __future__ import annotations

import pytest

from secml.dfp.registry import ModelRegistry, NoModelError
from secml.naming import user_to_model_name
from secml.settings import Settings


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_registry(
    listing: dict[str, str], ttl_s: float = 60.0, cache_size: int = 2
) -> tuple[ModelRegistry, FakeClock, list[tuple[str, str]]]:
    """A registry over a fake listing whose loader records what it loads."""
    clock = FakeClock()
    loaded: list[tuple[str, str]] = []

    def loader(name: str, version: str) -> object:
        loaded.append((name, version))
        return object()

    reg = ModelRegistry(
        "duo",
        ttl_s=ttl_s,
        cache_size=cache_size,
        loader=loader,  # type: ignore[arg-type]
        clock=clock,
        settings=Settings(mlflow_tracking_uri="http://127.0.0.1:1"),
    )
    reg._fetch_listing = lambda: dict(listing)  # type: ignore[method-assign]
    return reg, clock, loaded


def test_user_model_preferred_then_generic() -> None:
    """A user with a production model gets it; everyone else gets generic."""
    alice = user_to_model_name("duo", "alice@example.com")
    generic = user_to_model_name("duo", "generic")
    reg, _, _ = make_registry({alice: "3", generic: "7"})
    assert reg.resolve("alice@example.com") == (alice, "3")
    assert reg.resolve("bob@example.com") == (generic, "7")
    _, label = reg.model_for_user("bob@example.com")
    assert label == f"{generic}:7"


def test_no_model_error_names_user_and_what_to_do() -> None:
    """Without a generic model an unknown user cannot be scored; the error says why."""
    reg, _, _ = make_registry({user_to_model_name("duo", "alice@example.com"): "1"})
    with pytest.raises(NoModelError, match=r"bob@example.com.*dfp-train"):
        reg.resolve("bob@example.com")


def test_listing_refreshes_only_after_ttl() -> None:
    """The registry is asked once per TTL, not once per call."""
    generic = user_to_model_name("duo", "generic")
    listing = {generic: "1"}
    reg, clock, _ = make_registry(listing, ttl_s=30)
    calls = []
    reg._fetch_listing = lambda: calls.append(1) or dict(listing)  # type: ignore[method-assign]
    for _ in range(5):
        reg.resolve("x")
    assert len(calls) == 1
    listing[generic] = "2"  # promoted meanwhile
    clock.now = 29.0
    assert reg.resolve("x") == (generic, "1")
    clock.now = 30.0
    assert reg.resolve("x") == (generic, "2")
    assert len(calls) == 2 and reg.refreshes == 2
    reg.production_models(force=True)
    assert len(calls) == 3


def test_models_cached_lru_and_reloaded_after_promotion() -> None:
    """Loaded models are reused, the least recently used is evicted, new versions load."""
    names = {u: user_to_model_name("duo", u) for u in ("a@x.io", "b@x.io", "c@x.io")}
    listing = {n: "1" for n in names.values()}
    reg, clock, loaded = make_registry(listing, ttl_s=10, cache_size=2)
    m1, _ = reg.model_for_user("a@x.io")
    m1_again, _ = reg.model_for_user("a@x.io")
    assert m1 is m1_again and loaded == [(names["a@x.io"], "1")]
    reg.model_for_user("b@x.io")
    reg.model_for_user("a@x.io")  # a is now most recent
    reg.model_for_user("c@x.io")  # evicts b
    assert reg.cached() == [(names["a@x.io"], "1"), (names["c@x.io"], "1")]
    reg.model_for_user("b@x.io")
    assert loaded.count((names["b@x.io"], "1")) == 2
    listing[names["a@x.io"]] = "2"
    clock.now = 10.0
    _, label = reg.model_for_user("a@x.io")
    assert label == f"{names['a@x.io']}:2"
    assert (names["a@x.io"], "1") not in reg.cached()  # stale version dropped on refresh


def test_cache_size_must_be_positive() -> None:
    """A zero-size cache is a configuration error."""
    with pytest.raises(ValueError, match="cache_size"):
        make_registry({}, cache_size=0)
