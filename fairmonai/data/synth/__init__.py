"""Synthetic cohorts with controllable bias for the five fairmonai datasets.

``make_cohort(dataset, out_dir, n, seed, **knobs)`` writes the images (NIfTI for 3D volumes, PNG
for 2D photos), ``cohort.json`` (knobs, seed, shapes, counts per group x label) and, last,
``manifest.csv``, valid under ``fairmonai/data/schemas/<dataset>.json`` with ``split``
(train/test, 70 % of each label x group stratum in train) and ``fold`` (0-4, training rows only)
columns from :func:`fairmonai.data.assign_splits`. The same seed gives byte-identical files.

Knobs common to every dataset (keyed by the values of its sensitive attribute; see
:mod:`fairmonai.data.synth.common` for the exact rules):

``prevalence``
    label rate per group, ``"Black=0.6,White=0.3"`` or one number; exact:
    ``round_half_up(n_g * p_g)`` positives in a group of ``n_g``. Groups not named keep the
    dataset's default.
``cue_strength``
    >= 0, default 0 (none): a group-specific stripe texture multiplying the image,
    ``1 + 0.1 * cue_strength * sin(2 pi c_k x / L + phase)``, ``c_k`` cycles for group ``k``.
``difficulty``
    per-group multiplier (> 0, default 1) of the standard deviation of the additive Gaussian
    noise (``noise``).
``group_proportions`` / ``group_counts``
    the cohort's group mix (shares summing to 1, largest-remainder counts; or sizes), default
    equal; groups not named get no case.
``metadata_from``
    a real manifest of the same dataset (images not needed): the attributes (and, without
    ``prevalence``, the labels) of ``n`` of its rows, so subgroup sizes follow the real cohort.

Per-dataset knobs and image models are documented in each module: :mod:`.oct_glaucoma`,
:mod:`.rectal_mri`, :mod:`.mama_mia`, :mod:`.isic2020`, :mod:`.fitzpatrick17k`. The command
line is ``python -m fairmonai.data.synth <dataset> --out DIR --n N --seed S [knobs]``.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from . import common
from .fitzpatrick17k import make_fitzpatrick17k, render_fitzpatrick_image
from .isic2020 import make_isic2020, render_isic_image
from .mama_mia import make_mama_mia, parse_hard_subgroup, render_mama_case
from .oct_glaucoma import make_oct_glaucoma, render_oct_volume
from .rectal_mri import make_rectal_mri, render_rectal_case

__all__ = [
    "DATASETS",
    "GENERATORS",
    "make_cohort",
    "knobs_of",
    "make_oct_glaucoma",
    "make_rectal_mri",
    "make_mama_mia",
    "make_isic2020",
    "make_fitzpatrick17k",
    "render_oct_volume",
    "render_rectal_case",
    "render_mama_case",
    "render_isic_image",
    "render_fitzpatrick_image",
    "parse_hard_subgroup",
    "common",
]

#: The five dataset names, as in ``data_manifests/``.
DATASETS = ("oct_glaucoma", "rectal_mri", "mama_mia", "isic2020", "fitzpatrick17k")

#: Dataset name -> generator function.
GENERATORS = {
    "oct_glaucoma": make_oct_glaucoma,
    "rectal_mri": make_rectal_mri,
    "mama_mia": make_mama_mia,
    "isic2020": make_isic2020,
    "fitzpatrick17k": make_fitzpatrick17k,
}


def knobs_of(dataset: str) -> list[str]:
    """The keyword knobs the generator of ``dataset`` accepts (besides ``out_dir``, ``n``, ``seed``)."""
    if dataset not in GENERATORS:
        raise ValueError(f"unknown dataset '{dataset}'; expected one of {list(DATASETS)}")
    params = inspect.signature(GENERATORS[dataset]).parameters
    return [p for p in params if p not in ("out_dir", "n", "seed")]


def make_cohort(dataset: str, out_dir: str | os.PathLike, n: int | None = None, seed: int = 0, **knobs) -> Path:
    """Write a synthetic cohort of ``dataset`` to ``out_dir``; returns the path of its ``manifest.csv``.

    Args:
        dataset: one of :data:`DATASETS`.
        out_dir: output folder.
        n: number of cases (optional with ``group_counts`` or ``metadata_from``).
        seed: integer >= 0.
        knobs: the dataset's keyword knobs (:func:`knobs_of`); ``None`` values mean the default.

    Raises:
        ValueError: an unknown dataset, a knob the dataset does not take, or a bad knob value.

    Example:
        >>> make_cohort("oct_glaucoma", "out/oct", n=200, seed=0,
        ...             prevalence="Black=0.6,White=0.3,Asian=0.3", cue_strength=1.0,
        ...             difficulty="Black=2")  # doctest: +SKIP
    """
    allowed = knobs_of(dataset)
    unknown = [k for k in knobs if k not in allowed]
    if unknown:
        raise ValueError(f"knob(s) {unknown} do not apply to dataset '{dataset}'; its knobs are {allowed}")
    knobs = {k: v for k, v in knobs.items() if v is not None}
    return GENERATORS[dataset](out_dir, n, seed, **knobs)
