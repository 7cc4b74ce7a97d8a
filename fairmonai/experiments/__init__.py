"""Experiments that reproduce a paper's tables with a bundle: each run a resumable unit.

:mod:`fairmonai.experiments.runs` runs one bundle configuration (train, then evaluate on the asked
splits) in its own folder and skips or resumes it on a second call; :mod:`fairmonai.experiments.fairmedseg`
builds the MAMA-MIA FairMedSeg paper's Table 1 and its (alpha, minsup) sweep from such units.
"""

from .runs import BundleRun, RunFailed, run_bundle_unit

__all__ = ["BundleRun", "RunFailed", "run_bundle_unit"]
