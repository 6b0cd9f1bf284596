"""Shared ABP test data: one small seeded fleet and a quick model, built once per session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from secml.abp import model as m
from secml.abp.generator import generate


@dataclass
class Fleet:
    """Generated data plus a model trained on held-out-GPU split."""

    dir: Path
    data: Path
    labels: Path
    records: list[dict]
    ds: m.Dataset
    train_idx: np.ndarray
    test_idx: np.ndarray
    booster: object
    model_path: Path


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """48 GPUs x 4 hours at 60 s (11,520 rows) and a 60-tree booster trained on 3/4 of the GPUs.

    Many GPUs with few samples each: the GPU models, driver layouts and MIG boards all
    appear, so the held-out quarter is judged against a varied training fleet.
    """
    out = tmp_path_factory.mktemp("abp")
    data, labels = generate(out, gpus=48, hours=4, seed=7, interval_s=60)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    ds, _ = m.build_dataset(records, m.read_labels(str(labels)))
    tr, te = m.split(ds, "gpu", 0.25, seed=0)
    # one sample at a time (temporal=False): the per-record behaviour tests read it alone;
    # the temporal model is tested in test_temporal.py
    params = m.TrainParams(n_estimators=60, max_depth=5, temporal=False)
    booster = m.train(ds.subset(tr), params)
    path = out / "booster.ubj"
    booster.save_model(str(path))
    return Fleet(out, data, labels, records, ds, tr, te, booster, path)
