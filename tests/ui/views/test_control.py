"""AppTest of the Control messages page: compose from an example, validate, publish."""

from __future__ import annotations

import pytest

from ui import backend

from ..conftest import page_app, texts


def test_examples_are_offered_and_validate(ui_settings) -> None:
    at = page_app("control").run()
    assert not at.exception
    assert at.selectbox(key="c_example").options == list(backend.control_examples())
    at.selectbox(key="c_example").select("duo-training-streaming.json").run()
    at.button(key="c_validate").click().run()
    assert texts(at.success) == ["Valid control message."]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{\n  "inputs": [\n', "not JSON"),
        ('{"inputs": [{"tasks": [{"type": "explode", "properties": {}}]}]}', "invalid control"),
    ],
)
def test_invalid_message_is_refused_and_not_published(ui_settings, text, error) -> None:
    at = page_app("control").run()
    name = at.selectbox(key="c_example").value
    at.text_area(key=f"c_text_{name}").input(text)
    at.button(key="c_publish").click().run()
    assert not at.exception
    assert any(error in e for e in texts(at.error)), texts(at.error)
    assert not at.success
