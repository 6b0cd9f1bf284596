"""The analyst app (``streamlit run ui/app.py``): pages in ``ui.views``, logic in ``ui.backend``."""
