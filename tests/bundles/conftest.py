"""The bundles' shared smoke models: each bundle trains train.json + smoke.json once per test session
(``SMOKE_EPOCHS`` epochs, in process) and every check of a trained model reuses that run's folder."""

from __future__ import annotations

import pytest
from harness import BUNDLES, SMOKE_EPOCHS, ids, run_bundle


@pytest.fixture(scope="session", params=BUNDLES, ids=ids(BUNDLES))
def trained(request, tmp_path_factory):
    """``(bundle, bundle_root, training output)`` of the bundle's smoke model. Tests may add files to the
    root (evaluation, inference), never change what training wrote."""
    bundle = request.param
    root = tmp_path_factory.mktemp(f"smoke_{bundle.name}")
    res = run_bundle(bundle, root, ["train.json"], "--epochs", str(SMOKE_EPOCHS))
    return bundle, root, res.output
