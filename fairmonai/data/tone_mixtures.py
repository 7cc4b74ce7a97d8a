"""Training sets that differ only in their skin-tone mix (López-Pérez, Hauberg and Feragen's design).

:func:`draw_mixture` is a function of ``(manifest, repeat, mix, seed)``:

1. Groups from the manifest's skin-type attribute (``fitzpatrick``, the Fitzpatrick17k converter's
   ``fitzpatrick_scale``): ``light`` types (default 1-2) and ``dark`` types (default 5-6); the other
   types and unknown ones are left out.
2. Per repeat (generator seeded by ``(seed, repeat)``, the mix not involved, so A, B and C of a repeat
   share them): two disjoint test sets of ``test_size`` images, one light, one dark (the paper: 500
   each), and optionally validation sets of ``val_size`` per group (0 in the paper); the rest is the
   pool of each group.
3. ``n`` = the dark pool's size (available dark images - test - validation). The training set of
   ``mix`` (generator seeded by ``(seed, repeat, mix)``) is ``A``: n light; ``B``: n - n // 2 light
   and n // 2 dark (half and half, the odd image light); ``C``: n dark; drawn from the pools with
   replacement (the paper, L103) or, with ``replacement=False``, without.

The result keeps the training records with their multiplicities (an image drawn twice is listed
twice) and counts distinct images; :meth:`MixtureDraw.write_case_list` writes every set.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .manifest import ManifestSchema, load_manifest, load_schema

__all__ = ["MIXES", "GROUPS", "MixtureDraw", "MixtureError", "draw_mixture", "dark_share", "real_fitzpatrick_manifest",
           "check_case_list"]

logger = logging.getLogger(__name__)

#: dark share of the training set per mix.
MIXES = {"A": 0.0, "B": 0.5, "C": 1.0}
#: group names, in code order (``tone_group_code`` 0, 1).
GROUPS = ("light", "dark")


class MixtureError(InputError):
    """A draw that cannot be made (too few images, bad settings), naming what is short."""


def dark_share(mix: str) -> float:
    """The dark share of mix ``A``, ``B`` or ``C``.

    Raises:
        MixtureError: another name, listing the mixes.
    """
    if mix not in MIXES:
        raise MixtureError(f"mix '{mix}' is not one of {list(MIXES)} (A all light, B half and half, C all dark)")
    return MIXES[mix]


@dataclass
class MixtureDraw:
    """One draw. ``train`` holds records with repeats; ``test_light``, ``test_dark``, ``val`` distinct records.
    Every record gets ``tone_group`` (``light``/``dark``) and ``tone_group_code`` (0/1)."""

    repeat: int
    mix: str
    seed: int
    replacement: bool
    train: list[dict]
    test_light: list[dict]
    test_dark: list[dict]
    val: list[dict] = field(default_factory=list)
    available: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.train)

    def split(self, name: str) -> list[dict]:
        """``"train"``, ``"test"`` (light then dark test set) or ``"val"`` records.

        Raises:
            MixtureError: another name, or ``"val"`` when no validation set was drawn (``val_size`` 0).
        """
        if name == "train":
            return self.train
        if name == "test":
            return self.test_light + self.test_dark
        if name == "val":
            if not self.val:
                raise MixtureError("no validation set: val_size is 0 (the paper has none); pass --val_size N to "
                                   "hold N images per group out of the training pools")
            return self.val
        raise MixtureError(f"split '{name}' is not one of ['train', 'test', 'val']")

    def counts(self) -> dict:
        """Sizes: ``n``, training images and distinct images per group, test and validation sizes, available images."""
        per = Counter(r["tone_group"] for r in self.train)
        distinct = Counter(r["tone_group"] for r in {r["case_id"]: r for r in self.train}.values())
        return {"repeat": self.repeat, "mix": self.mix, "seed": self.seed, "replacement": self.replacement,
                "n": self.n, "train_light": per["light"], "train_dark": per["dark"],
                "distinct_light": distinct["light"], "distinct_dark": distinct["dark"],
                "test_light": len(self.test_light), "test_dark": len(self.test_dark),
                "val": len(self.val), "available_light": self.available.get("light", 0),
                "available_dark": self.available.get("dark", 0)}

    def case_table(self) -> pd.DataFrame:
        """One row per distinct (set, case): ``set`` (train/test/val), ``case_id``, ``tone_group``,
        ``fitzpatrick``, ``multiplicity`` (times drawn; 1 outside training)."""
        rows = []
        for name, records in (("train", self.train), ("test", self.test_light + self.test_dark), ("val", self.val)):
            counts = Counter(r["case_id"] for r in records)
            first = {}
            for r in records:
                first.setdefault(r["case_id"], r)
            for cid, r in first.items():
                rows.append({"set": name, "case_id": cid, "tone_group": r["tone_group"],
                             "fitzpatrick": r.get("fitzpatrick", ""), "multiplicity": counts[cid]})
        return pd.DataFrame(rows, columns=["set", "case_id", "tone_group", "fitzpatrick", "multiplicity"])

    def write_case_list(self, path: str | os.PathLike) -> Path:
        """Write :meth:`case_table` as CSV (and the counts as a JSON next to it, ``<stem>_counts.json``)."""
        import json

        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self.case_table().to_csv(p, index=False)
        c = self.counts()
        (p.parent / f"{p.stem}_counts.json").write_text(json.dumps(c, indent=2))
        logger.info("mix %s repeat %d: n = %d (light %d, dark %d; distinct %d light, %d dark), test %d light + %d dark, "
                    "case list %s", self.mix, self.repeat, c["n"], c["train_light"], c["train_dark"],
                    c["distinct_light"], c["distinct_dark"], c["test_light"], c["test_dark"], p)
        return p


def _types(value, name: str, categories: Sequence[str]) -> tuple[str, ...]:
    if isinstance(value, (str, int)):
        value = [value]
    out = tuple(str(v) for v in value)
    bad = [v for v in out if v not in categories]
    if not out or bad:
        raise MixtureError(f"{name}: skin types {list(bad) or out} are not among the attribute's categories "
                           f"{list(categories)}")
    return out


def _check_size(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise MixtureError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def draw_mixture(
    manifest: str | os.PathLike | Sequence[Mapping],
    *,
    repeat: int,
    mix: str,
    seed: int = 0,
    schema: str | os.PathLike | Mapping | ManifestSchema = "fitzpatrick17k",
    attribute: str = "fitzpatrick",
    light: Sequence[str] = ("1", "2"),
    dark: Sequence[str] = ("5", "6"),
    test_size: int = 500,
    val_size: int = 0,
    replacement: bool = True,
    check_files: bool = True,
) -> MixtureDraw:
    """Draw the test sets and the training set of ``mix`` for ``repeat`` (module docstring).

    Args:
        manifest: the manifest CSV (validated by :func:`load_manifest`: a missing column, image file or an
            unknown skin type is a :class:`~fairmonai.data.ManifestError` naming file, row and column), or
            records already loaded.
        repeat: repeat index >= 0 (the paper: 0-9).
        mix: ``"A"`` (all light), ``"B"`` (half and half) or ``"C"`` (all dark).
        seed: experiment seed >= 0.
        schema: the manifest's schema. Default ``"fitzpatrick17k"``.
        attribute: the skin-type attribute. Default ``"fitzpatrick"``.
        light, dark: skin types of the two groups, disjoint. Default 1-2 and 5-6.
        test_size: images per group in each test set. Default 500.
        val_size: images per group held out for validation. Default 0.
        replacement: draw the training set with replacement. Default ``True``.
        check_files: check that the image files exist (CSV manifests).

    Returns:
        the :class:`MixtureDraw`.

    Raises:
        MixtureError: an unknown mix, overlapping or unknown groups, a bad size, too few images in a
            group (its count and what it needs named), a manifest without the attribute.
    """
    share = dark_share(mix)
    repeat = _check_size(repeat, "repeat", 0)
    seed = _check_size(seed, "seed", 0)
    test_size = _check_size(test_size, "test_size", 1)
    val_size = _check_size(val_size, "val_size", 0)
    spec = load_schema(schema)
    if attribute not in spec.attributes:
        raise MixtureError(f"attribute '{attribute}' is not an attribute of schema '{spec.name}' "
                           f"({list(spec.attributes)})")
    categories = list(spec.attributes[attribute].categories)
    light_t, dark_t = _types(light, "light", categories), _types(dark, "dark", categories)
    if set(light_t) & set(dark_t):
        raise MixtureError(f"light {list(light_t)} and dark {list(dark_t)} share skin types {sorted(set(light_t) & set(dark_t))}")
    if isinstance(manifest, (str, os.PathLike)):
        records = load_manifest(manifest, spec, check_files=check_files)
    else:
        records = [dict(r) for r in manifest]
    groups: dict[str, list[dict]] = {"light": [], "dark": []}
    for r in records:
        if attribute not in r:
            raise MixtureError(f"records have no '{attribute}' value (case {r.get('case_id')})")
        v = str(r[attribute])
        g = "light" if v in light_t else "dark" if v in dark_t else None
        if g is not None:
            groups[g].append(dict(r, tone_group=g, tone_group_code=GROUPS.index(g)))
    names = {"light": light_t, "dark": dark_t}
    for g in GROUPS:
        need = test_size + val_size + 1
        if len(groups[g]) < need:
            raise MixtureError(
                f"too few {g} images (types {', '.join(names[g])}): {len(groups[g])} in the manifest, need at least "
                f"{need} (test_size {test_size} + val_size {val_size} + 1 for training); lower test_size or add images")
    rng = np.random.default_rng([seed, repeat])
    test, val, pool = {}, {}, {}
    for g in GROUPS:
        order = rng.permutation(len(groups[g]))
        recs = [groups[g][i] for i in order]
        test[g], val[g], pool[g] = recs[:test_size], recs[test_size:test_size + val_size], recs[test_size + val_size:]
    n = len(pool["dark"])
    n_dark = {0.0: 0, 0.5: n // 2, 1.0: n}[share]
    take = {"light": n - n_dark, "dark": n_dark}
    if not replacement:
        for g in GROUPS:
            if take[g] > len(pool[g]):
                raise MixtureError(
                    f"mix {mix} without replacement needs {take[g]} {g} training images, the {g} pool has "
                    f"{len(pool[g])} ({len(groups[g])} {g} images - test {test_size} - val {val_size}); use "
                    "replacement: true (the paper's draw)")
    train_rng = np.random.default_rng([seed, repeat, 1 + list(MIXES).index(mix)])
    train: list[dict] = []
    for g in GROUPS:
        if take[g]:
            idx = train_rng.choice(len(pool[g]), size=take[g], replace=replacement)
            train += [pool[g][i] for i in idx]
    order = train_rng.permutation(len(train))
    return MixtureDraw(repeat=repeat, mix=mix, seed=seed, replacement=bool(replacement),
                       train=[train[i] for i in order], test_light=test["light"], test_dark=test["dark"],
                       val=val["light"] + val["dark"], available={g: len(groups[g]) for g in GROUPS})


def real_fitzpatrick_manifest(metadata_csv: str | os.PathLike, image_dir: str | os.PathLike,
                              out: str | os.PathLike, *, image_pattern: str = "{md5hash}.jpg") -> str:
    """The Fitzpatrick17k manifest of the images present in a local folder, built once.

    Converts ``fitzpatrick17k.csv`` with :func:`fairmonai.data.convert.fitzpatrick17k.convert_fitzpatrick17k`
    (images ``<md5hash>.jpg``, never downloaded) with ``missing_files="drop"``, logs how many rows had no
    image and writes their ids to ``<out stem>_missing.csv``; later calls reuse ``out`` when it is newer
    than the CSV. ``n`` of the draw then follows the dark images present.

    Raises:
        FileNotFoundError: the CSV or the image folder does not exist, naming it.
    """
    from .convert._common import write_manifest
    from .convert.fitzpatrick17k import convert_fitzpatrick17k

    csv, folder, out = Path(metadata_csv), Path(image_dir), Path(out)
    for p, what in ((csv, "metadata CSV (fitzpatrick17k.csv)"), (folder, "image folder")):
        if not p.exists():
            raise FileNotFoundError(f"Fitzpatrick17k {what} {p} does not exist: nothing is downloaded, give the local copy")
    if out.is_file() and out.stat().st_mtime >= csv.stat().st_mtime:
        return str(out)
    conv = convert_fitzpatrick17k(csv, folder, out, image_pattern=image_pattern, missing_files="drop")
    write_manifest(conv, out)
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    present = set(conv.table["case_id"]) if len(conv.table) else set()
    missing = table.loc[~table["md5hash"].isin(present), ["md5hash", "fitzpatrick_scale", "url"]]
    missing.to_csv(out.parent / f"{out.stem}_missing.csv", index=False)
    logger.warning("Fitzpatrick17k: %d of %d images missing from %s (listed in %s); the draw uses the %d present",
                   len(missing), len(table), folder, out.parent / f"{out.stem}_missing.csv", len(present))
    return str(out)


def check_case_list(draw: MixtureDraw, path: str | os.PathLike) -> None:
    """Before evaluation: the sets drawn now are those the training run wrote to ``path`` (its case list).

    Raises:
        MixtureError: no case list (train first), or a set that differs (e.g. another ``repeat``, ``mix``,
            ``seed`` or ``test_size`` than training's), naming the set and the number of differing cases.
    """
    p = Path(path)
    if not p.is_file():
        raise MixtureError(f"no case list {p}: the training run writes it; evaluate the folder a training run used")
    written = pd.read_csv(p, dtype={"case_id": str})
    now = draw.case_table()
    for name in ("train", "test", "val"):
        a = dict(zip(written.loc[written["set"] == name, "case_id"], written.loc[written["set"] == name, "multiplicity"]))
        b = dict(zip(now.loc[now["set"] == name, "case_id"], now.loc[now["set"] == name, "multiplicity"]))
        if a != b:
            differ = len(set(a.items()) ^ set(b.items()))
            raise MixtureError(
                f"the {name} set drawn now (mix {draw.mix}, repeat {draw.repeat}, seed {draw.seed}) differs from the one "
                f"training wrote to {p} ({differ} case entries differ): evaluate with the mix, repeat, seed and sizes "
                "the model was trained with")
