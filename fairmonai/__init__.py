"""fairmonai: fairness methods for medical imaging as MONAI bundles.

Subpackages: ``data`` (manifests, splits, synthetic cohorts, real-data converters), ``metrics``
(group fairness, segmentation challenge scores, subgroup divergence), ``handlers`` (ignite
adapters), ``reports`` (tables and plots from a predictions file), ``losses``, ``networks``,
``engines``. Import the subpackage you need; this module imports nothing heavy.

Importing ``fairmonai`` (every bundle config does, in ``imports``) installs
:func:`fairmonai.errors.install_excepthook`: when a run stops on an uncaught exception whose chain
holds a :class:`fairmonai.errors.InputError` (a manifest or image error), the last line printed
names the file and the case or row at fault; see :mod:`fairmonai.errors`.
"""

from .errors import InputError, install_excepthook

__version__ = "0.1.0"

install_excepthook()
