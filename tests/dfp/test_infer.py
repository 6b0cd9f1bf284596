"""DFP inference: each user's production model else generic, model_version on every row."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from secml.dfp.infer import score_events
from secml.dfp.model import AutoEncoder, feature_config
from secml.dfp.registry import ModelRegistry, NoModelError
from secml.naming import user_to_model_name
from secml.settings import Settings

TINY = {"encoder_layers": [16], "decoder_layers": [16], "max_epochs": 3, "device": "cpu"}
ALICE = "alice@example.com"


@pytest.fixture(scope="module")
def models(request: pytest.FixtureRequest) -> dict[str, AutoEncoder]:
    """An own model for alice and a generic model (different seeds, so scores differ)."""
    frame = request.getfixturevalue("small_duo_frame_module")
    cfg = feature_config("duo")
    return {
        user_to_model_name("duo", ALICE): AutoEncoder(cfg, **TINY, seed=1).fit(
            frame[frame.username == ALICE]
        ),
        user_to_model_name("duo", "generic"): AutoEncoder(cfg, **TINY, seed=2).fit(frame),
    }


@pytest.fixture(scope="module")
def small_duo_frame_module() -> pd.DataFrame:
    """Processed Duo events for this module (built once)."""
    from secml.dfp.generator import generate
    from secml.dfp.schema import process_records

    gen = generate("duo", n_users=4, days=3, n_attacks=0, attack_days=0, sparse_fraction=0.0)
    df = process_records(gen.records, "duo")
    first = df.username.iloc[0]
    return df.assign(username=df.username.where(df.username != first, ALICE))


def registry(models: dict[str, AutoEncoder], listing: dict[str, str]) -> ModelRegistry:
    """A registry over a fixed listing whose loader returns the given models."""
    reg = ModelRegistry(
        "duo",
        loader=lambda name, version: models[name],
        settings=Settings(mlflow_tracking_uri="http://127.0.0.1:1"),
    )
    reg._fetch_listing = lambda: dict(listing)  # type: ignore[method-assign]
    return reg


def test_own_model_else_generic(models, small_duo_frame_module: pd.DataFrame) -> None:
    """Alice is scored by her model, everyone else by generic; rows keep order and columns."""
    df = small_duo_frame_module.sample(frac=1.0, random_state=3)  # shuffled, users interleaved
    alice, generic = user_to_model_name("duo", ALICE), user_to_model_name("duo", "generic")
    out = score_events(df, "duo", registry(models, {alice: "4", generic: "9"}))
    assert list(out.index) == list(df.index)
    pd.testing.assert_frame_equal(out[df.columns], df)
    is_alice = out.username == ALICE
    assert (out.loc[is_alice, "model_version"] == f"{alice}:4").all()
    assert (out.loc[~is_alice, "model_version"] == f"{generic}:9").all()
    np.testing.assert_allclose(
        out.loc[is_alice, "mean_abs_z"],
        models[alice].score(df[is_alice])["mean_abs_z"],
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        out.loc[~is_alice, "mean_abs_z"],
        models[generic].score(df[~is_alice])["mean_abs_z"],
        rtol=1e-5,
    )
    for ft in feature_config("duo").categorical:
        assert {f"{ft}_loss", f"{ft}_z_loss", f"{ft}_pred"} <= set(out.columns)


def test_duplicate_index_and_rescoring(models, small_duo_frame_module: pd.DataFrame) -> None:
    """A frame with a repeated index, or already scored, is scored again cleanly."""
    generic = user_to_model_name("duo", "generic")
    reg = registry(models, {generic: "1"})
    df = small_duo_frame_module.head(30).copy()
    df.index = [0] * len(df)
    once = score_events(df, "duo", reg)
    twice = score_events(once, "duo", reg)
    assert len(twice) == 30 and list(twice.columns) == list(once.columns)
    np.testing.assert_allclose(twice["mean_abs_z"], once["mean_abs_z"], rtol=1e-5)


def test_no_model_for_user_is_an_error(models, small_duo_frame_module: pd.DataFrame) -> None:
    """Without the user's or a generic production model, inference refuses and says why."""
    alice = user_to_model_name("duo", ALICE)
    with pytest.raises(NoModelError, match="generic"):
        score_events(small_duo_frame_module, "duo", registry(models, {alice: "1"}))


def test_bad_input_named(models, small_duo_frame_module: pd.DataFrame) -> None:
    """A frame without ``username`` or for the wrong source is refused by name."""
    reg = registry(models, {})
    with pytest.raises(KeyError, match="username"):
        score_events(small_duo_frame_module.drop(columns="username"), "duo", reg)
    with pytest.raises(ValueError, match="azure"):
        score_events(small_duo_frame_module, "azure", reg)
    assert score_events(small_duo_frame_module.iloc[:0], "duo", reg).empty
