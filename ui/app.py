"""Entry point of the analyst app: ``streamlit run ui/app.py``.

Signs the analyst in, then routes between the pages with ``st.navigation``. Every page is
registered even before sign-in, so a deep link (``/detections?detection=42``) keeps its path
and query parameters through the sign-in form and opens once the analyst is in.
"""

from __future__ import annotations

import streamlit as st

from ui import auth, clients
from ui.views import compare, control, detections, home, labels, models, monitoring, training

# (render function, title, material icon, url path); the first is the default page.
_PAGES = [
    (home.render, "Home", "home", "home"),
    (detections.render, "Detections", "policy", "detections"),
    (labels.render, "Labels", "label", "labels"),
    (training.render, "Training", "model_training", "training"),
    (models.render, "Models", "inventory_2", "models"),
    (compare.render, "Compare runs", "compare_arrows", "compare"),
    (control.render, "Control messages", "send", "control"),
    (monitoring.render, "Monitoring", "monitoring", "monitoring"),
]
PAGES = [
    st.Page(fn, title=title, icon=f":material/{icon}:", url_path=path, default=i == 0)
    for i, (fn, title, icon, path) in enumerate(_PAGES)
]


def main() -> None:
    """Sign in, then show the navigation and the chosen page."""
    st.set_page_config(page_title="secml analyst", page_icon=":material/shield:", layout="wide")
    settings = clients.settings()
    user = auth.current_user(settings)
    auth.persist_session(settings)
    if not user:
        st.navigation(PAGES, position="hidden")  # resolves the URL's page; shown after sign-in
        auth.sign_in_page(settings)
        return
    with st.sidebar:
        st.caption(f"Signed in as **{user}**")
        if st.button("Sign out"):
            auth.sign_out(settings)
            st.rerun()
    st.navigation(PAGES).run()


main()
