"""Tests of ui.auth: the local user check."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from secml.settings import Settings
from ui.auth import check_local


@pytest.mark.parametrize(
    ("user", "password", "ok"),
    [
        ("analyst", "pw-1", True),
        ("analyst", "pw-2", False),
        ("Analyst", "pw-1", False),
        ("", "", False),
        ("analyst", "", False),
    ],
)
def test_check_local(user: str, password: str, ok: bool) -> None:
    settings = Settings(ui_username="analyst", ui_password=SecretStr("pw-1"))
    assert check_local(settings, user, password) is ok


def test_oidc_is_a_setting() -> None:
    assert Settings(ui_auth="oidc", ui_oidc_provider="corp").ui_auth == "oidc"
    with pytest.raises(ValueError):
        Settings(ui_auth="ldap")


def test_session_token_round_trip_expiry_and_tampering() -> None:
    from ui.auth import check_token, make_token

    s = Settings(ui_password=SecretStr("pw-1"), ui_session_hours=2)
    token = make_token(s, "analyst", now=1_000_000)
    assert check_token(s, token, now=1_000_000 + 3600) == "analyst"
    assert check_token(s, token, now=1_000_000 + 2 * 3600) == "", "expired after 2 hours"
    body, _, sig = token.partition(".")
    forged = make_token(s, "mallory", now=1_000_000).partition(".")[0] + "." + sig
    assert check_token(s, forged, now=1_000_000) == ""
    assert check_token(s, body + "." + "0" * 64, now=1_000_000) == ""
    assert check_token(s, "", now=1_000_000) == "" and check_token(s, "x.y") == ""
    # a new password (or an explicit secret) invalidates every session
    assert check_token(Settings(ui_password=SecretStr("pw-2")), token, now=1_000_000) == ""
    other = Settings(ui_password=SecretStr("pw-1"), ui_session_secret=SecretStr("k"))
    assert check_token(other, token, now=1_000_000) == ""
    assert check_token(other, make_token(other, "a", now=1), now=2) == "a"
