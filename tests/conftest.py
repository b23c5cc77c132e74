"""Shared fixtures: config composition, the shared data, isolated model dirs and MLflow stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from hsbcala import schema

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"

pytest_plugins = ["tests.slurm_cluster"] if (ROOT / "tests" / "slurm_cluster.py").exists() else []

schema.register()


def compose_cfg(overrides: list[str] | None = None, *, hydra_node: bool = False):
    """Compose conf/config.yaml like train.py does (Hydra's compose API), with overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("config", overrides=list(overrides or []), return_hydra_config=hydra_node)


@pytest.fixture
def shared() -> Path:
    """../shared (read-only). Missing: skip on a user's machine, fail in CI."""
    if not (SHARED / "data").is_dir():
        msg = f"shared data not found at {SHARED} (clone the project beside shared/)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED


@pytest.fixture
def fraktur_books(shared: Path):
    """Two disjoint sets of real Fraktur books: (train books, val books) as directories."""
    books = sorted((shared / "data" / "fraktur19-lines" / "ref_AS").iterdir())
    return books[:2], books[2:3]
