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
