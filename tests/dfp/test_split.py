"""Split users: generic and individual, skip/only lists, minimum history."""

from __future__ import annotations

import pandas as pd
import pytest

from secml.dfp.split import split_users
from secml.naming import GENERIC_USER
from secml.settings import get_settings


def test_all_splits_generic_and_individual(small_duo_frame: pd.DataFrame) -> None:
    """``all``: generic on every row, one frame per user with enough events."""
    s = split_users(small_duo_frame, "all", min_events=40)
    assert s.generic is not None and len(s.generic) == len(small_duo_frame)
    assert sorted(s.users) == sorted(small_duo_frame["username"].unique())
    assert all((rows["username"] == u).all() and len(rows) == 40 for u, rows in s.users.items())
    assert s.items()[0][0] == GENERIC_USER and len(s.items()) == 4


def test_fewer_than_minimum_get_no_model(small_duo_frame: pd.DataFrame) -> None:
    """Users below ``min_events`` are listed with their counts, not given a model."""
    df = small_duo_frame[
        (small_duo_frame["username"] != "alice@example.com") | (small_duo_frame["logcount"] < 3)
    ]
    s = split_users(df, "individual", min_events=30)
    assert s.generic is None
    assert "alice@example.com" not in s.users
    assert s.too_few == {"alice@example.com": int((df["username"] == "alice@example.com").sum())}


def test_default_minimum_is_settings(small_duo_frame: pd.DataFrame) -> None:
    """The default threshold is ``settings.dfp_min_user_events`` (300): 40 events are too few."""
    assert get_settings().dfp_min_user_events == 300
    s = split_users(small_duo_frame, "all")
    assert s.users == {} and len(s.too_few) == 3 and s.generic is not None


def test_generic_and_none(small_duo_frame: pd.DataFrame) -> None:
    """``generic`` trains only the generic model; ``none`` trains nothing."""
    s = split_users(small_duo_frame, "generic", min_events=1)
    assert s.users == {} and s.generic is not None
    n = split_users(small_duo_frame, "none", min_events=1)
    assert n.items() == []


def test_skip_and_only(small_duo_frame: pd.DataFrame) -> None:
    """Skipped users are out of every model; only-lists keep just those users."""
    s = split_users(small_duo_frame, "all", min_events=1, skip_users=["alice@example.com"])
    assert "alice@example.com" not in s.users and s.skipped == ["alice@example.com"]
    assert s.generic is not None and "alice@example.com" not in set(s.generic["username"])
    o = split_users(small_duo_frame, "all", min_events=1, only_users=["carol/ops@example.com"])
    assert list(o.users) == ["carol/ops@example.com"]
    assert o.generic is not None and set(o.generic["username"]) == {"carol/ops@example.com"}
    with pytest.raises(ValueError, match="both skipped and only"):
        split_users(small_duo_frame, skip_users=["a"], only_users=["a"])


def test_reserved_generic_id_gets_no_own_model(small_duo_frame: pd.DataFrame) -> None:
    """A user literally called ``generic`` cannot take over the generic model's name."""
    df = small_duo_frame.copy()
    df.loc[df["username"] == "alice@example.com", "username"] = GENERIC_USER
    s = split_users(df, "all", min_events=1)
    assert GENERIC_USER not in s.users and GENERIC_USER in s.too_few


def test_bad_arguments(small_duo_frame: pd.DataFrame) -> None:
    """Unknown modes and frames without usernames are refused."""
    with pytest.raises(ValueError, match="train_users"):
        split_users(small_duo_frame, "everyone")
    with pytest.raises(KeyError, match="username"):
        split_users(small_duo_frame.drop(columns="username"))
