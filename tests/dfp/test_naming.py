"""User id <-> model name: one reversible function pair, valid MLflow names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mlflow.utils.validation import _validate_model_name

from secml.naming import (
    GENERIC_USER,
    ModelNameError,
    is_generic,
    model_name_to_user,
    user_to_model_name,
)

CASES = [
    "alice@example.com",
    "Bob.Smith@Example.COM",
    "ops/alice@example.com",
    "a_b",
    "_41",
    "domain\\user",
    "Zoë Müller",
    "用户@例子.公司",
    "..",
    "-leading-dash",
    "generic-user",
    "with space",
    "emoji😀",
]


@pytest.mark.parametrize("user", CASES)
def test_round_trip(user: str) -> None:
    """Emails, dots, slashes, underscores, unicode all come back unchanged."""
    for source in ("duo", "azure"):
        name = user_to_model_name(source, user)
        assert name.startswith(f"dfp-{source}-")
        assert model_name_to_user(name) == (source, user)
        _validate_model_name(name)  # MLflow accepts it
        assert "/" not in name and ":" not in name
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


def test_examples_are_readable() -> None:
    """Lower-case emails stay readable; generic has its fixed name."""
    assert user_to_model_name("duo", "alice@example.com") == "dfp-duo-alice_40example.com"
    assert user_to_model_name("azure", GENERIC_USER) == "dfp-azure-generic"
    assert model_name_to_user("dfp-azure-generic") == ("azure", GENERIC_USER)
    assert is_generic("dfp-duo-generic") and not is_generic("dfp-duo-alice_40example.com")


def test_case_matters() -> None:
    """Users differing only in case get different models."""
    assert user_to_model_name("duo", "Alice") != user_to_model_name("duo", "alice")


@given(st.text(min_size=1, max_size=25))
def test_round_trip_any_text(user: str) -> None:
    """Any non-empty text round-trips and distinct users never share a name."""
    name = user_to_model_name("duo", user)
    assert model_name_to_user(name) == ("duo", user)


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_injective(a: str, b: str) -> None:
    """Two different users never map to one name."""
    if a != b:
        assert user_to_model_name("duo", a) != user_to_model_name("duo", b)


@pytest.mark.parametrize(
    "name",
    [
        "abp-nvsmi-xgb",
        "dfp-okta-alice",
        "dfp-duo-",
        "dfp-duo-Alice",
        "dfp-duo-a_4",
        "dfp-duo-_ff",
        "dfp-duo-_41"[:-1],
        "dfp-duo-a_5f_",
    ],
)
def test_bad_names_refused(name: str) -> None:
    """Non-DFP names, unknown sources and non-canonical encodings are refused."""
    with pytest.raises(ModelNameError):
        model_name_to_user(name)


def test_bad_inputs() -> None:
    """Empty users and unknown sources are refused with a message."""
    with pytest.raises(ModelNameError, match="non-empty"):
        user_to_model_name("duo", "")
    with pytest.raises(ModelNameError, match="unknown DFP source"):
        user_to_model_name("nvsmi", "alice")
    with pytest.raises(ModelNameError, match="limit"):
        user_to_model_name("duo", "Ω" * 200)
