"""Split events by user: the generic model's rows and each eligible user's own rows.

``train_users`` follows Morpheus: ``generic`` (one model on everyone), ``individual`` (one
model per user with enough history), ``all`` (both), ``none`` (no training). ``skip_users``
drops users entirely; ``only_users`` keeps just those. Users with fewer than
``settings.dfp_min_user_events`` events get no model of their own (they are scored by the
generic model), and neither does the reserved id ``secml.naming.GENERIC_USER``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from secml.naming import GENERIC_USER
from secml.settings import get_settings

log = logging.getLogger(__name__)

TrainUsers = Literal["generic", "individual", "all", "none"]
TRAIN_USERS: tuple[str, ...] = ("generic", "individual", "all", "none")


@dataclass
class UserSplit:
    """Result of ``split_users``: rows for the generic model and per eligible user."""

    generic: pd.DataFrame | None
    users: dict[str, pd.DataFrame] = field(default_factory=dict)
    too_few: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[str, pd.DataFrame]]:
        """(user id or ``GENERIC_USER``, rows) for every model to train, generic first."""
        out = [(GENERIC_USER, self.generic)] if self.generic is not None else []
        return out + list(self.users.items())


def split_users(
    df: pd.DataFrame,
    train_users: str = "all",
    *,
    min_events: int | None = None,
    skip_users: Iterable[str] = (),
    only_users: Iterable[str] = (),
) -> UserSplit:
    """Split processed events (column ``username``) into the generic and per-user frames."""
    if train_users not in TRAIN_USERS:
        raise ValueError(f"train_users must be one of {TRAIN_USERS}, got {train_users!r}")
    if "username" not in df.columns:
        raise KeyError("split_users: frame has no 'username' column (run schema.process first)")
    min_events = get_settings().dfp_min_user_events if min_events is None else int(min_events)
    skip, only = set(skip_users), set(only_users)
    if skip & only:
        raise ValueError(f"users both skipped and only-listed: {sorted(skip & only)}")
    keep = pd.Series(True, index=df.index)
    if skip:
        keep &= ~df["username"].isin(skip)
    if only:
        keep &= df["username"].isin(only)
    skipped = sorted(set(df.loc[~keep, "username"].astype(str)))
    data = df[keep]
    result = UserSplit(generic=None, skipped=skipped)
    if train_users == "none":
        return result
    if train_users in ("generic", "all") and not data.empty:
        result.generic = data
    if train_users in ("individual", "all"):
        for user, rows in data.groupby("username", sort=True):
            user = str(user)
            if user == GENERIC_USER:
                log.warning("user id %r is reserved for the generic model; no own model", user)
                result.too_few[user] = len(rows)
            elif len(rows) < min_events:
                result.too_few[user] = len(rows)
            else:
                result.users[user] = rows
    log.info(
        "split: generic=%s, %d users with own models, %d with fewer than %d events, %d skipped",
        0 if result.generic is None else len(result.generic),
        len(result.users),
        len(result.too_few),
        min_events,
        len(skipped),
    )
    return result
