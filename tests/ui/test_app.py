"""AppTest of the entry point: sign-in gate, navigation, sign-out."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from .conftest import PASSWORD, texts

APP = str(Path(__file__).resolve().parents[2] / "ui" / "app.py")


def _sign_in(at: AppTest, username: str, password: str) -> AppTest:
    """Fill and submit the sign-in form."""
    at.text_input[0].input(username)
    at.text_input[1].input(password)
    at.button[0].click()
    return at.run()


def test_sign_in_gates_every_page(ui_settings) -> None:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert texts(at.title) == ["Sign in"]
    assert "user" not in at.session_state
    _sign_in(at, "analyst", "wrong")
    assert texts(at.error) == ["Unknown username or wrong password."]
    assert texts(at.title) == ["Sign in"]
    _sign_in(at, "someone-else", PASSWORD)
    assert texts(at.title) == ["Sign in"]
    _sign_in(at, "analyst", PASSWORD)
    assert not at.exception
    assert texts(at.title) == ["Security ML platform"]
    assert at.session_state["user"] == "analyst"
    assert any("Signed in as **analyst**" in c for c in texts(at.sidebar.caption))


def test_sign_out_returns_to_sign_in(seeded_store) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["user"] = "analyst"
    at.run()
    assert texts(at.title) == ["Security ML platform"]
    sign_out = next(b for b in at.sidebar.button if b.label == "Sign out")
    sign_out.click().run()
    assert texts(at.title) == ["Sign in"]
    assert "user" not in at.session_state


def test_oidc_mode_offers_the_identity_provider(ui_settings, monkeypatch) -> None:
    from secml.settings import get_settings

    monkeypatch.setenv("SECML_UI_AUTH", "oidc")
    get_settings.cache_clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert texts(at.title) == ["Sign in"]
    assert [b.label for b in at.button] == ["Sign in with your identity provider"]
    assert not at.text_input, "no local password form in OIDC mode"
