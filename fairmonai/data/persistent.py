"""Cache keys for MONAI's :class:`~monai.data.PersistentDataset` that change when an image file changes.

``PersistentDataset`` names each cached item by ``hash_func(item)`` (MONAI's default
:func:`~monai.data.utils.pickle_hashing` hashes the data dict: paths, labels, ...) plus, with
``hash_transform``, a hash of its deterministic transforms. A file replaced under the same path
keeps its key, so the cache would serve the old image. :func:`file_stat_hashing` adds each path's
size and modification time (ns) to the key, the rule :mod:`fairmonai.data.preprocess.cache` uses
(a stat costs nothing; hashing the content would read every image on every access).

Bundle config::

    "dataset": {"_target_": "PersistentDataset", "data": "@train#datalist", "transform": "@train#preprocessing",
                "cache_dir": "@cache_dir", "hash_func": "$fairmonai.data.persistent.file_stat_hashing",
                "hash_transform": "$monai.data.utils.pickle_hashing"}

(``hash_transform=pickle_hashing`` hashes the transforms with their parameters, so e.g. another
resize gets other files; MONAI's ``json_hashing`` falls back to the transforms' class names.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from monai.data.utils import pickle_hashing

__all__ = ["file_stat_hashing", "DEFAULT_FILE_KEYS"]

#: the data keys whose values are files
DEFAULT_FILE_KEYS = ("image",)


def file_stat_hashing(item: Mapping, keys: Sequence[str] = DEFAULT_FILE_KEYS) -> bytes:
    """``pickle_hashing`` of ``item`` with, for each of ``keys`` holding a path to a file, its
    ``(size, st_mtime_ns)``; a key that is absent or not a file adds nothing (the load then fails
    with its own error).

    Args:
        item: one data dict of the data list.
        keys: the keys whose files are stat-ed (default ``("image",)``).

    Returns:
        the cache key, as ``PersistentDataset`` expects (hex digest bytes).
    """
    stats = {}
    for key in keys:
        value = item.get(key)
        if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
            st = os.stat(value)
            stats[key] = (st.st_size, st.st_mtime_ns)
    return pickle_hashing({**dict(item), "__file_stats__": stats})
