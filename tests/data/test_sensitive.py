"""The schema is the one definition of each attribute's groups; configs and metadata read or match it."""

import json
from pathlib import Path

import pytest

from fairmonai.data import ManifestError
from fairmonai.data.sensitive import attribute_groups

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"


def test_attribute_groups_mama_mia():
    # the categories as written in fairmonai/data/schemas/mama_mia.json, in its order (= the codes)
    assert attribute_groups("mama_mia") == {
        "age_group": ["0-40", "41-50", "51-60", "61-70", "71+"],
        "menopausal_status": ["pre", "post", "unknown"],
        "breast_density": ["a", "b", "c", "d"],
    }


def test_attribute_groups_selects_in_the_order_asked():
    groups = attribute_groups("mama_mia", ["breast_density", "age_group"])
    assert list(groups) == ["breast_density", "age_group"]
    assert groups["breast_density"] == ["a", "b", "c", "d"]


def test_attribute_groups_unknown_attribute():
    with pytest.raises(ManifestError, match=r"attribute\(s\) \['race'\] not declared in schema 'mama_mia'"):
        attribute_groups("mama_mia", ["race"])


@pytest.mark.parametrize("bundle", sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir()))
def test_bundle_metadata_fairness_is_the_schema(bundle):
    """metadata.json documents the groups; the schema defines them: the two must agree."""
    configs = BUNDLES / bundle / "configs"
    meta = json.loads((configs / "metadata.json").read_text())
    train = json.loads((configs / "train.json").read_text())
    documented = meta["fairness"]["sensitive_attributes"]
    if "dark_types" in train:  # the VAE bundle compares two bins of one attribute's categories (light, dark)
        attr = train["attribute"]
        categories = attribute_groups(train["schema"], [attr])[attr]
        assert list(documented) == [attr] and len(documented[attr]) == 2
        assert set(train["light_types"]) | set(train["dark_types"]) <= set(categories)
        assert not set(train["light_types"]) & set(train["dark_types"])
        return
    attributes = train.get("attributes") or [train["sensitive_key"]]
    assert list(documented) == list(attributes)
    assert documented == attribute_groups(train["schema"], attributes)
