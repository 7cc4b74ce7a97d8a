"""Converters from the real datasets' releases to fairmonai manifests.

One module per dataset; each ``convert_*`` function returns a :class:`Conversion` (the manifest as
a table of strings plus the rows dropped and why) and :func:`write_manifest` writes it atomically
after validating it against ``fairmonai/data/schemas/<dataset>.json``. The command line::

    python -m fairmonai.data.convert <dataset> <source...> --out manifest.csv [options]

runs both and prints :func:`summarise`'s report; ``--no-check-files`` builds the manifest from the
metadata tables alone. See ``data_manifests/<dataset>/README.md`` for each dataset.
"""

from ._common import Conversion, summarise, write_manifest
from .fitzpatrick17k import convert_fitzpatrick17k
from .harvard_gf import convert_harvard_gf
from .isic2020 import convert_isic2020
from .mama_mia import convert_mama_mia, read_official_split
from .rectal_mri import convert_rectal_mri, normalise_sex

#: dataset (schema) name -> converter
CONVERTERS = {
    "oct_glaucoma": convert_harvard_gf,
    "rectal_mri": convert_rectal_mri,
    "mama_mia": convert_mama_mia,
    "isic2020": convert_isic2020,
    "fitzpatrick17k": convert_fitzpatrick17k,
}

__all__ = [
    "CONVERTERS",
    "Conversion",
    "convert_fitzpatrick17k",
    "convert_harvard_gf",
    "convert_isic2020",
    "convert_mama_mia",
    "convert_rectal_mri",
    "normalise_sex",
    "read_official_split",
    "summarise",
    "write_manifest",
]
