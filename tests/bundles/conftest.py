"""The bundles' shared smoke models: each bundle trains train.json + smoke.json once per test session
(``SMOKE_EPOCHS`` epochs, in process) and every check of a trained model reuses that run's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import BUNDLES, SMOKE_EPOCHS, ids, run_bundle


@pytest.fixture(scope="session")
def smoke_model(tmp_path_factory):
    """``smoke_model(bundle) -> (bundle_root, training output)``: the bundle's smoke model, trained on first
    request and shared by every test of the session (``trained`` and the fine-tuning overlays, which
    start from it)."""
    models: dict[Path, tuple[Path, str]] = {}

    def get(bundle: Path) -> tuple[Path, str]:
        if bundle not in models:
            root = tmp_path_factory.mktemp(f"smoke_{bundle.name}")
            res = run_bundle(bundle, root, ["train.json"], "--epochs", str(SMOKE_EPOCHS))
            models[bundle] = (root, res.output)
        return models[bundle]

    return get


@pytest.fixture(scope="session", params=BUNDLES, ids=ids(BUNDLES))
def trained(request, smoke_model):
    """``(bundle, bundle_root, training output)`` of the bundle's smoke model. Tests may add files to the
    root (evaluation, inference), never change what training wrote."""
    bundle = request.param
    root, output = smoke_model(bundle)
    return bundle, root, output
