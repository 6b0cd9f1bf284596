"""Sign-in: a local user from settings by default, or OIDC through Streamlit's ``st.login``.

OIDC (``SECML_UI_AUTH=oidc``) uses the ``[auth]`` section of ``.streamlit/secrets.toml``
(``redirect_uri``, ``cookie_secret``, ``client_id``, ``client_secret``,
``server_metadata_url``); ``SECML_UI_OIDC_PROVIDER`` names a provider sub-section if several
are configured. The signed-in name is what goes on labels and promotions.

A local sign-in survives reloads and deep links: the browser keeps a session cookie
(``secml_session``: user, expiry, HMAC-SHA256 under ``settings.ui_session_secret``, else a key
derived from the UI password) for ``settings.ui_session_hours``; Streamlit hands it back in
``st.context.cookies`` on every new connection. Signing out clears it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time

import streamlit as st

from secml.settings import Settings

log = logging.getLogger(__name__)


def check_local(settings: Settings, username: str, password: str) -> bool:
    """Whether username and password match the local user of the settings (constant time)."""
    user_ok = hmac.compare_digest(username.encode(), settings.ui_username.encode())
    secret = settings.ui_password.get_secret_value().encode()
    pass_ok = hmac.compare_digest(password.encode(), secret)
    return user_ok and pass_ok


COOKIE = "secml_session"


def _session_key(settings: Settings) -> bytes:
    """The key that signs session cookies."""
    if settings.ui_session_secret is not None:
        return settings.ui_session_secret.get_secret_value().encode()
    secret = settings.ui_password.get_secret_value().encode()
    return hmac.new(secret, b"secml-ui-session", hashlib.sha256).digest()


def make_token(settings: Settings, user: str, now: float | None = None) -> str:
    """A signed session token for ``user`` valid for ``settings.ui_session_hours``."""
    expires = int((time.time() if now is None else now) + settings.ui_session_hours * 3600)
    body = base64.urlsafe_b64encode(json.dumps([user, expires]).encode()).decode().rstrip("=")
    sig = hmac.new(_session_key(settings), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{sig}"


def check_token(settings: Settings, token: str, now: float | None = None) -> str:
    """The user of a valid, unexpired token, else ''."""
    if not isinstance(token, str):
        return ""
    body, _, sig = token.partition(".")
    want = hmac.new(_session_key(settings), body.encode(), hashlib.sha256).hexdigest()
    if not body or not hmac.compare_digest(sig.encode(), want.encode()):
        return ""
    try:
        user, expires = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError):
        return ""
    if (time.time() if now is None else now) >= float(expires) or not isinstance(user, str):
        return ""
    return user


def _cookie_script(value: str, max_age: int) -> str:
    """JavaScript that sets (or, with max_age 0, clears) the session cookie on this site."""
    return (
        f"<script>document.cookie = '{COOKIE}={value}; path=/; max-age={max_age}; "
        "SameSite=Strict';</script>"
    )


def _write_cookie(value: str, max_age: int) -> None:
    """Send the cookie to the browser (an invisible element; token text is URL-safe)."""
    st.html(_cookie_script(value, max_age), unsafe_allow_javascript=True)


def persist_session(settings: Settings) -> None:
    """After sign-in: store the session cookie in the browser (once per Streamlit session)."""
    token = st.session_state.pop("_new_session_token", None)
    if token:
        _write_cookie(token, int(settings.ui_session_hours * 3600))
    if st.session_state.pop("_clear_session_cookie", False):
        _write_cookie("", 0)


def _cookie_user(settings: Settings) -> str:
    """The user of the browser's session cookie, unless this session signed out."""
    if st.session_state.get("_signed_out"):
        return ""
    try:
        token = st.context.cookies.get(COOKIE, "")
    except Exception:  # no browser (AppTest, bare mode): no cookie
        return ""
    user = check_token(settings, token) if token else ""
    return user if user == settings.ui_username else ""  # a renamed local user signs out


def _oidc_user() -> str:
    """The OIDC user's name, or '' when not logged in."""
    user = st.user
    if not getattr(user, "is_logged_in", False):
        return ""
    return str(user.get("email") or user.get("preferred_username") or user.get("name") or "")


def current_user(settings: Settings) -> str:
    """The signed-in analyst's name, or '' when nobody is signed in."""
    if settings.ui_auth == "oidc":
        name = _oidc_user()
        if name:
            st.session_state["user"] = name
        return name
    user = str(st.session_state.get("user", ""))
    if not user:
        user = _cookie_user(settings)
        if user:
            st.session_state["user"] = user
            log.info("analyst %s resumed a session", user)
    return user


def sign_in_page(settings: Settings) -> None:
    """The sign-in page: OIDC button or the local username/password form."""
    st.title("Sign in")
    if settings.ui_auth == "oidc":
        st.button(
            "Sign in with your identity provider",
            on_click=st.login,
            args=(settings.ui_oidc_provider,) if settings.ui_oidc_provider else (),
        )
        return
    with st.form("sign-in"):
        username = st.text_input("Username")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        if check_local(settings, username, password):
            st.session_state["user"] = username
            st.session_state["_new_session_token"] = make_token(settings, username)
            st.session_state.pop("_signed_out", None)
            log.info("analyst %s signed in", username)
            st.rerun()
        else:
            log.warning("failed sign-in for %r", username)
            st.error("Unknown username or wrong password.")


def sign_out(settings: Settings) -> None:
    """Forget the signed-in analyst (and log out of OIDC)."""
    st.session_state.pop("user", None)
    st.session_state["_signed_out"] = True  # the cookie this page loaded with no longer counts
    st.session_state["_clear_session_cookie"] = True
    if settings.ui_auth == "oidc":
        st.logout()
