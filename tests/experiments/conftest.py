"""Shared data for the experiment tests: one small seeded ABP fleet, generated once."""

from __future__ import annotations

from pathlib import Path

import pytest

from secml.abp.generator import generate


@pytest.fixture(scope="session")
def small_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 GPUs x 3 hours at 60 s (4,320 rows): every profile appears, trainings take ~1 s."""
    out = tmp_path_factory.mktemp("abp-exp")
    data, _ = generate(out, gpus=24, hours=3, seed=11, interval_s=60)
    return data
