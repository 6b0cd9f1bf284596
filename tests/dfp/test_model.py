"""The DFP autoencoder: convergence, behaviour (direction, invariance), persistence, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from secml.dfp.model import OTHER, AutoEncoder, AutoEncoderConfig, embedding_dim, find_model_dir
from secml.settings import ROOT

CAT = ["accessdevicebrowser", "accessdeviceos", "authdevicename", "reason"]
NUM = ["logcount", "locincrement"]
BIN = ["result"]
SMALL = {"encoder_layers": [32, 16], "decoder_layers": [32], "max_epochs": 25, "device": "cpu"}


def habit_frame(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """One user's processed Duo events: a main browser/OS/phone, some variety, rare denials."""
    rng = np.random.default_rng(seed)
    day = np.sort(rng.integers(0, 20, n))
    logcount = pd.Series(1, index=range(n)).groupby(day).cumsum().to_numpy()
    ok = rng.random(n) > 0.07
    return pd.DataFrame(
        {
            "username": "alice@example.com",
            "timestamp": pd.Timestamp("2022-08-01", tz="UTC") + pd.to_timedelta(day, "D"),
            "accessdevicebrowser": rng.choice(["Chrome", "Safari"], n, p=[0.85, 0.15]),
            "accessdeviceos": rng.choice(["Windows", "iOS"], n, p=[0.8, 0.2]),
            "authdevicename": rng.choice(["phone-a", "phone-b"], n, p=[0.9, 0.1]),
            "reason": np.where(ok, "user_approved", "no_response"),
            "logcount": logcount,
            "locincrement": np.minimum(1 + (rng.random(n) < 0.1), 2),
            "result": ok,
            "location": rng.choice(["Ann Arbor, Michigan, United States", "Detroit, MI, US"], n),
        }
    )


def make_model(**kw: object) -> AutoEncoder:
    """A small autoencoder over the Duo features."""
    return AutoEncoder(categorical=CAT, numeric=NUM, binary=BIN, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Training frame shared by the tests of this module."""
    return habit_frame()


@pytest.fixture(scope="module")
def trained(frame: pd.DataFrame) -> AutoEncoder:
    """A model fitted once for the module."""
    return make_model().fit(frame)


def test_defaults_follow_dfencoder() -> None:
    """Default layers are Morpheus's [512, 500] encoder and [512] decoder with swap noise 0.2."""
    cfg = AutoEncoderConfig()
    assert cfg.encoder_layers == [512, 500]
    assert cfg.decoder_layers == [512]
    assert cfg.swap_p == pytest.approx(0.2)
    assert embedding_dim(2) >= 2 and embedding_dim(10_000) <= 600


def test_training_converges(trained: AutoEncoder) -> None:
    """Adam drives the validation loss well below its first epoch; best epoch is kept."""
    vals = [h["val_loss"] for h in trained.history]
    assert vals[-1] < 0.6 * vals[0] or min(vals) < 0.6 * vals[0]
    assert trained.val_loss == pytest.approx(min(vals))
    assert 1 <= trained.epochs_trained <= 25


def test_early_stopping_stops_before_max_epochs(frame: pd.DataFrame) -> None:
    """With a learning rate too high to improve, patience ends training early."""
    m = make_model(lr=5.0, max_epochs=40, patience=2).fit(frame)
    assert m.epochs_trained < 40


def test_loss_stats_stored_per_feature(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """Per-feature loss mean/std are kept; training rows score low on average."""
    assert set(trained.loss_mean) == set(CAT + NUM + BIN) == set(trained.loss_std)
    assert all(v >= 0 for v in trained.loss_std.values())
    s = trained.score(frame)
    assert float(s["mean_abs_z"].median()) < 1.5


def test_score_columns(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """Every feature has _loss, _z_loss (absolute), _pred; max/mean_abs_z agree with them."""
    s = trained.score(frame.head(50))
    assert list(s.index) == list(frame.head(50).index)
    for f in CAT + NUM + BIN:
        assert {f"{f}_loss", f"{f}_z_loss", f"{f}_pred"} <= set(s.columns)
        assert (s[f"{f}_z_loss"] >= 0).all()
    z = s[[f"{f}_z_loss" for f in CAT + NUM + BIN]]
    np.testing.assert_allclose(s["max_abs_z"], z.max(axis=1))
    np.testing.assert_allclose(s["mean_abs_z"], z.mean(axis=1))
    assert set(s["accessdevicebrowser_pred"]) <= {"Chrome", "Safari", OTHER}
    assert s["result_pred"].dtype == bool
    assert np.issubdtype(s["logcount_pred"].dtype, np.floating)


def test_new_country_and_device_raise_mean_abs_z(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """Direction: a login from a new device, browser and country scores far above normal."""
    normal = frame.sample(40, random_state=1)
    attack = normal.copy()
    attack["accessdevicebrowser"] = "Opera"
    attack["accessdeviceos"] = "Linux"
    attack["authdevicename"] = "unknown-phone"
    attack["locincrement"] = 3  # a new location (country) that day
    attack["location"] = "Lagos, Lagos, Nigeria"
    base = trained.score(normal)["mean_abs_z"]
    hit = trained.score(attack)["mean_abs_z"]
    assert (hit.to_numpy() > base.to_numpy()).all()
    assert float(hit.min()) > 2.0  # above the default threshold
    assert float(hit.median()) > 3 * float(base.median())


def test_unused_column_changes_nothing(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """Invariance: columns that are not features (location, username) do not move scores."""
    rows = frame.head(60)
    changed = rows.assign(location="Tokyo, Tokyo, Japan", username="mallory", extra=1)
    pd.testing.assert_frame_equal(trained.score(rows), trained.score(changed))


def test_scores_are_row_independent(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """A row scores the same alone as in a batch (no batch statistics leak)."""
    batch = trained.score(frame.head(30))
    alone = trained.score(frame.iloc[[7]])
    np.testing.assert_allclose(alone["mean_abs_z"].iloc[0], batch["mean_abs_z"].iloc[7], rtol=1e-5)


def test_seeded_training_is_reproducible(frame: pd.DataFrame) -> None:
    """Same seed, same data -> identical model; another seed -> a different one."""
    a = make_model(max_epochs=3).fit(frame).score(frame.head(20))
    b = make_model(max_epochs=3).fit(frame).score(frame.head(20))
    c = make_model(max_epochs=3, seed=7).fit(frame).score(frame.head(20))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["mean_abs_z"], c["mean_abs_z"])


def test_unknown_and_missing_categories_go_to_other(trained: AutoEncoder) -> None:
    """Unseen values and NaN encode as the ``_other`` slot instead of failing."""
    x = trained._encode(
        pd.DataFrame(
            {
                "accessdevicebrowser": ["Chrome", "NeverSeen", None],
                "accessdeviceos": ["iOS", "iOS", "iOS"],
                "authdevicename": ["phone-a"] * 3,
                "reason": ["user_approved"] * 3,
                "logcount": [1, 2, 3],
                "locincrement": [1, 1, 1],
                "result": [True, False, True],
            }
        )
    )
    cats = trained.categories["accessdevicebrowser"]
    assert cats[0] == OTHER
    assert x.cat[:, 0].tolist() == [cats.index("Chrome"), 0, 0]


def test_min_cats_folds_rare_values(frame: pd.DataFrame) -> None:
    """Values seen fewer than ``min_cats`` times are not given their own category."""
    rare = frame.copy()
    rare.loc[rare.index[:3], "accessdevicebrowser"] = "Rare"
    m = make_model(max_epochs=1, min_cats=5).fit(rare)
    assert "Rare" not in m.categories["accessdevicebrowser"]
    assert "Chrome" in m.categories["accessdevicebrowser"]


def test_save_load_roundtrip(trained: AutoEncoder, frame: pd.DataFrame, tmp_path: Path) -> None:
    """Plain files (json + state_dict) reload to identical scores."""
    d = trained.save(tmp_path / "m")
    assert sorted(p.name for p in d.iterdir()) == ["model.json", "state_dict.pt"]
    meta = json.loads((d / "model.json").read_text())
    assert (
        meta["config"]["categorical"] == CAT
        and meta["loss_mean"].keys() == trained.loss_mean.keys()
    )
    loaded = AutoEncoder.load(find_model_dir(tmp_path), device="cpu")
    pd.testing.assert_frame_equal(trained.score(frame.head(40)), loaded.score(frame.head(40)))


@pytest.mark.skipif(
    not (ROOT / ".venv-triton" / "bin" / "python").exists(), reason="no .venv-triton"
)
def test_loads_in_triton_environment(
    trained: AutoEncoder, frame: pd.DataFrame, tmp_path: Path
) -> None:
    """The Triton environment (numpy 1.26, pandas 2.2) loads the files and agrees on scores."""
    d = trained.save(tmp_path / "m")
    rows = frame.head(25).drop(columns=["timestamp"])
    rows.to_json(tmp_path / "rows.json", orient="records")
    code = (
        "import sys, json, pandas as pd, numpy as np\n"
        "from secml.dfp.model import AutoEncoder\n"
        "m = AutoEncoder.load(sys.argv[1], device='cpu')\n"
        "df = pd.read_json(sys.argv[2], orient='records')\n"
        "s = m.score(df)\n"
        "print(json.dumps({'np': np.__version__, 'pd': pd.__version__,"
        " 'z': s['mean_abs_z'].tolist()}))\n"
    )
    out = subprocess.run(
        [
            str(ROOT / ".venv-triton" / "bin" / "python"),
            "-c",
            code,
            str(d),
            str(tmp_path / "rows.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["np"].startswith("1.26")
    np.testing.assert_allclose(res["z"], trained.score(frame.head(25))["mean_abs_z"], rtol=1e-4)


def test_missing_feature_column_is_named(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """A frame without a feature column is refused with the column's name."""
    with pytest.raises(KeyError, match="accessdeviceos"):
        trained.score(frame.drop(columns=["accessdeviceos"]))


def test_bad_numeric_value_names_row_and_field(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """A non-numeric value in a numeric feature names the feature and the row."""
    bad = frame.head(5).copy()
    bad["logcount"] = bad["logcount"].astype(object)
    bad.loc[bad.index[3], "logcount"] = "many"
    with pytest.raises(ValueError, match=r"'logcount'.*row 3.*'many'"):
        trained.score(bad)


def test_bad_binary_value_names_row_and_field(trained: AutoEncoder, frame: pd.DataFrame) -> None:
    """A binary feature accepts bools, 0/1 and true/false only."""
    bad = frame.head(4).copy()
    bad["result"] = ["true", "0", "maybe", "false"]
    with pytest.raises(ValueError, match=r"'result'.*row 2.*'maybe'"):
        trained.score(bad)
    ok = bad.assign(result=["true", "0", "1", "false"])
    assert len(trained.score(ok)) == 4


def test_config_errors() -> None:
    """Bad parameters are refused by name."""
    with pytest.raises(TypeError, match="hidden"):
        AutoEncoder(categorical=["a"], hidden=3)
    with pytest.raises(ValueError, match="at least one"):
        AutoEncoder()
    with pytest.raises(ValueError, match="more than one kind"):
        AutoEncoder(categorical=["a"], numeric=["a"])
    with pytest.raises(RuntimeError, match="not trained"):
        AutoEncoder(categorical=["a"]).score(pd.DataFrame({"a": ["x"]}))
    with pytest.raises(FileNotFoundError, match="model.json"):
        AutoEncoder.load("/nonexistent-dir")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu(frame: pd.DataFrame, tmp_path: Path) -> None:
    """Trained on CUDA, the model scores on CUDA and, reloaded, on CPU alike."""
    m = make_model(device="cuda", max_epochs=5).fit(frame)
    assert next(m.net.parameters()).is_cuda
    gpu = m.score(frame.head(50))
    cpu = AutoEncoder.load(m.save(tmp_path / "g"), device="cpu").score(frame.head(50))
    np.testing.assert_allclose(gpu["mean_abs_z"], cpu["mean_abs_z"], rtol=1e-3, atol=1e-3)
    assert float(m.score(frame.head(50))["mean_abs_z"].median()) < 2.0
