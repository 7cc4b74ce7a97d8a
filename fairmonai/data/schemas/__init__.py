"""The datasets' manifest schemas, one ``<dataset>.json`` each, shipped with the package.

Read them with :func:`fairmonai.data.load_schema` (``load_schema("oct_glaucoma")``); the keys are
described in :mod:`fairmonai.data.manifest`. How to build each dataset's manifest from the real data
is in the repository's ``data_manifests/<dataset>/README.md``.
"""
