"""Sign-in: a local user from settings by default, or OIDC through Streamlit's ``st.login``.

OIDC (``SECML_UI_AUTH=oidc``) uses the ``[auth]`` section of ``.streamlit/secrets.toml``
(``redirect_uri``, ``cookie_secret``, ``client_id``, ``client_secret``,
``server_metadata_url``); ``SECML_UI_OIDC_PROVIDER`` names a provider sub-section if several
are configured. The signed-in name is what goes on labels and promotions.
"""

from __future__ import annotations

import hmac
import logging

import streamlit as st

from secml.settings import Settings

log = logging.getLogger(__name__)


def check_local(settings: Settings, username: str, password: str) -> bool:
    """Whether username and password match the local user of the settings (constant time)."""
    user_ok = hmac.compare_digest(username.encode(), settings.ui_username.encode())
    secret = settings.ui_password.get_secret_value().encode()
    pass_ok = hmac.compare_digest(password.encode(), secret)
    return user_ok and pass_ok


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
    return str(st.session_state.get("user", ""))


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
            log.info("analyst %s signed in", username)
            st.rerun()
        else:
            log.warning("failed sign-in for %r", username)
            st.error("Unknown username or wrong password.")


def sign_out(settings: Settings) -> None:
    """Forget the signed-in analyst (and log out of OIDC)."""
    st.session_state.pop("user", None)
    if settings.ui_auth == "oidc":
        st.logout()
