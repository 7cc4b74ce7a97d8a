"""fairmonai: fairness methods for medical imaging as MONAI bundles.

Subpackages: ``data`` (manifests, splits, synthetic cohorts, real-data converters), ``metrics``
(group fairness, segmentation challenge scores, subgroup divergence), ``handlers`` (ignite
adapters), ``reports`` (tables and plots from a predictions file), ``losses``, ``networks``,
``engines``. Import the subpackage you need; this module imports nothing heavy.
"""

__version__ = "0.1.0"
