"""One source for the sensitive attribute: the schema.

A bundle names its sensitive attribute once (``sensitive_key``, e.g. ``"race"``) and its dataset's
schema (``schema``). The group names, their order (the integer codes) and the reference group are
read from, or checked against, the schema's ``attributes`` at the start of a run, so changing the
attribute is one override and a mistake is an error naming what the schema declares, not a failure
in the evaluation after training.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from .manifest import ManifestError, ManifestSchema, load_schema

__all__ = ["attribute_groups", "check_attributes", "group_names"]


def _declared(schema: ManifestSchema) -> str:
    return ", ".join(f"{a} ({'/'.join(s.categories)})" for a, s in schema.attributes.items()) or "none"


def group_names(schema: str | os.PathLike | Mapping | ManifestSchema, sensitive_key: str,
                reference_group: str | None = None) -> list[str]:
    """The groups of ``sensitive_key`` in the schema's order (group ``i`` has code ``i``).

    Args:
        schema: a dataset name, schema path, dict or :class:`~fairmonai.data.ManifestSchema`.
        sensitive_key: the attribute.
        reference_group: when given, it must be one of the groups.

    Raises:
        ManifestError: the attribute is not declared in the schema (the message lists what is), or
            the reference group is not one of its categories.

    Example:
        >>> group_names("oct_glaucoma", "race", "Black")
        ['Asian', 'Black', 'White']
    """
    s = load_schema(schema)
    if sensitive_key not in s.attributes:
        raise ManifestError(f"sensitive attribute '{sensitive_key}' is not declared in schema '{s.name}' "
                            f"(declared: {_declared(s)}): declare it in the schema's attributes, or pick one of these",
                            file=s.source)
    groups = list(s.attributes[sensitive_key].categories)
    if reference_group is not None and reference_group not in groups:
        raise ManifestError(f"reference_group '{reference_group}' is not a category of '{sensitive_key}' in schema "
                            f"'{s.name}': one of {groups}", file=s.source)
    return groups


def attribute_groups(schema: str | os.PathLike | Mapping | ManifestSchema,
                     attributes: Sequence[str] | None = None) -> dict[str, list[str]]:
    """``{attribute: groups}`` in the schema's order, for metrics that score several attributes at once.

    Args:
        schema: a dataset name, schema path, dict or :class:`~fairmonai.data.ManifestSchema`.
        attributes: the attributes to return, in this order; ``None`` (default) for every attribute
            the schema declares, in its order.

    Raises:
        ManifestError: an attribute the schema does not declare (as :func:`check_attributes`).

    Example:
        >>> attribute_groups("mama_mia", ["menopausal_status", "breast_density"])
        {'menopausal_status': ['pre', 'post', 'unknown'], 'breast_density': ['a', 'b', 'c', 'd']}
    """
    s = load_schema(schema)
    names = list(s.attributes) if attributes is None else check_attributes(s, attributes)
    return {a: list(s.attributes[a].categories) for a in names}


def check_attributes(schema: str | os.PathLike | Mapping | ManifestSchema, attributes: Sequence[str]) -> list[str]:
    """``attributes``, checked to be declared in the schema; returned unchanged for use in a config.

    Raises:
        ManifestError: an attribute the schema does not declare (a column of the CSV that is not in the
            schema is not read), naming it and the declared ones.
    """
    s = load_schema(schema)
    if isinstance(attributes, str):
        attributes = [attributes]
    unknown = [a for a in attributes if a not in s.attributes]
    if unknown:
        raise ManifestError(f"attribute(s) {unknown} not declared in schema '{s.name}' (declared: {_declared(s)}): "
                            "a manifest column is only read when the schema's attributes declare it, with its "
                            "categories and missing-value policy", file=s.source)
    return list(attributes)
