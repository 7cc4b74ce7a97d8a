"""Command line: ``python -m fairmonai.data.convert <dataset> <source...> --out manifest.csv [options]``.

Exit status 0 on success, 2 on bad input (a one-line ``error:`` message naming file, row and
column) or bad arguments. The manifest is written only when it validates.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..manifest import ManifestError
from ._common import MISSING_FILE_POLICIES, summarise, write_manifest
from .fitzpatrick17k import convert_fitzpatrick17k
from .harvard_gf import convert_harvard_gf
from .isic2020 import SEX_MISSING_POLICIES, convert_isic2020
from .mama_mia import DEFAULT_PATTERNS, convert_mama_mia
from .rectal_mri import convert_rectal_mri

__all__ = ["build_parser", "main"]


def _common(p: argparse.ArgumentParser, *, split: bool = True, files: bool = True) -> None:
    p.add_argument("--out", required=True, help="manifest CSV to write (atomically, after validation)")
    p.add_argument("--no-check-files", dest="check_files", action="store_false",
                   help="metadata only: do not check that images exist (paths are still written)")
    if files:
        p.add_argument("--missing-files", choices=MISSING_FILE_POLICIES, default="error",
                       help="a case whose image is not on disk: error (default) or drop it")
    if split:
        p.add_argument("--train-fraction", type=float, default=0.7, help="share of each stratum in train (0.7)")
    p.add_argument("--folds", type=int, default=5, help="folds of the training part (5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and folds (0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fairmonai.data.convert",
        description="Build a fairmonai manifest CSV from a real dataset's release.")
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="dataset")

    p = sub.add_parser("oct_glaucoma", aliases=["harvard_gf"],
                       help="Harvard-GF: folder of Training/Validation/Test npz")
    p.add_argument("root", help="Harvard-GF folder holding Training/, Validation/, Test/")
    p.add_argument("--validation-as", choices=("test", "val"), default="test",
                   help="split of the Validation folder: test (FaMI, default) or val")
    p.add_argument("--image-key", default="oct_bscans", help="array each npz must hold (oct_bscans)")
    p.add_argument("--allow-pickle", action="store_true", help="allow object arrays in the npz files (trusted files)")
    _common(p, split=False, files=False)

    p = sub.add_parser("rectal_mri", help="rectal MRI: clinical CSV + image folder")
    p.add_argument("csv", help="one row per patient: id, pCR, sex (age, site optional)")
    p.add_argument("image_root", help="folder the path patterns are relative to")
    p.add_argument("--image-pattern", default="{id}/t2.nii.gz", help="T2w image path ({id}/t2.nii.gz)")
    p.add_argument("--mask-pattern", default="{id}/mask.nii.gz", help="tumour mask path ({id}/mask.nii.gz)")
    p.add_argument("--id-column", default="patient_id")
    p.add_argument("--label-column", default="pcr", help="pCR column: 0/1, yes/no, true/false (pcr)")
    p.add_argument("--sex-column", default="sex", help="M/F/male/female or numeric codes (sex)")
    p.add_argument("--age-column", default="age", help="used when present (age)")
    p.add_argument("--site-column", default="site", help="used when present (site)")
    p.add_argument("--series-uid-column", default="series_uid",
                   help="used when present: the SeriesInstanceUID of a DICOM folder with several series (series_uid)")
    p.add_argument("--male-code", help="numeric code of male in the sex column, e.g. 1")
    p.add_argument("--female-code", help="numeric code of female (default: the other of 0/1)")
    _common(p)

    p = sub.add_parser("mama_mia", help="MAMA-MIA: clinical table + release root")
    p.add_argument("table", help="clinical_and_imaging_info.xlsx (or a CSV export of sheet dataset_info)")
    p.add_argument("root", help="release root: images/, segmentations/expert/, patient_info_files/")
    p.add_argument("--sheet", default="dataset_info", help="Excel sheet (dataset_info)")
    p.add_argument("--split-file", help="official train_test_splits.csv (default: <root>/train_test_splits.csv)")
    p.add_argument("--no-official-split", dest="use_official_split", action="store_false",
                   help="ignore the official split file; make a seeded stratified split")
    p.add_argument("--official-test-as", choices=("test", "val"), default="test",
                   help="split of the official test cases: test (default) or val")
    p.add_argument("--info-dir", help="patient JSON folder (default: <root>/patient_info_files)")
    p.add_argument("--bbox-order", choices=("sitk", "nifti"), default="sitk",
                   help="axis order of the JSON breast coordinates: sitk (default; x and z swapped into the "
                        "manifest's LoadImage order) or nifti (copied unchanged)")
    for col, pattern in DEFAULT_PATTERNS.items():
        flag = {"image_pre": "--pre-pattern", "image_post1": "--post1-pattern", "image_post2": "--post2-pattern",
                "label": "--mask-pattern"}[col]
        p.add_argument(flag, dest=f"pattern_{col}", default=pattern, metavar="PATTERN", help=f"({pattern})")
    _common(p)

    p = sub.add_parser("isic2020", help="ISIC 2020: ground-truth CSV + JPEG folder")
    p.add_argument("ground_truth", help="ISIC_2020_Training_GroundTruth[_v2].csv")
    p.add_argument("image_dir", help="folder of the training JPEGs")
    p.add_argument("--duplicates", help="ISIC_2020_Training_Duplicates.csv: drop image_name_2 of each pair")
    p.add_argument("--image-pattern", default="{image_name}.jpg", help="({image_name}.jpg)")
    p.add_argument("--sex-missing", choices=SEX_MISSING_POLICIES, default="drop",
                   help="images without sex: drop (default) or impute (marked sex_imputed=1)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="share of each stratum's patients in a val part (0: train/test only; Hänel et al.'s "
                        "70/20/10 split: --train-fraction 0.7 --val-fraction 0.2)")
    _common(p)

    p = sub.add_parser("fitzpatrick17k", help="Fitzpatrick17k: CSV + image folder")
    p.add_argument("csv", help="fitzpatrick17k.csv")
    p.add_argument("image_dir", help="folder of the downloaded images")
    p.add_argument("--image-pattern", default="{md5hash}.jpg", help="({md5hash}.jpg)")
    _common(p)
    return parser


def _convert(args: argparse.Namespace):
    common = {"check_files": args.check_files, "missing_files": getattr(args, "missing_files", "error"),
              "train_fraction": getattr(args, "train_fraction", 0.7), "num_folds": args.folds, "seed": args.seed}
    if args.dataset in ("oct_glaucoma", "harvard_gf"):
        return convert_harvard_gf(args.root, args.out, validation_as=args.validation_as, num_folds=args.folds,
                                  seed=args.seed, image_key=args.image_key, allow_pickle=args.allow_pickle)
    if args.dataset == "rectal_mri":
        return convert_rectal_mri(
            args.csv, args.image_root, args.out, image_pattern=args.image_pattern, mask_pattern=args.mask_pattern,
            id_column=args.id_column, label_column=args.label_column, sex_column=args.sex_column,
            age_column=args.age_column, site_column=args.site_column, series_uid_column=args.series_uid_column,
            male_code=args.male_code, female_code=args.female_code, **common)
    if args.dataset == "mama_mia":
        patterns = {col: getattr(args, f"pattern_{col}") for col in DEFAULT_PATTERNS}
        return convert_mama_mia(
            args.table, args.root, args.out, sheet=args.sheet, split_file=args.split_file,
            use_official_split=args.use_official_split, official_test_as=args.official_test_as,
            info_dir=args.info_dir, bbox_order=args.bbox_order, patterns=patterns, **common)
    if args.dataset == "isic2020":
        return convert_isic2020(args.ground_truth, args.image_dir, args.out, duplicates=args.duplicates,
                                image_pattern=args.image_pattern, sex_missing=args.sex_missing,
                                val_fraction=args.val_fraction, **common)
    return convert_fitzpatrick17k(args.csv, args.image_dir, args.out, image_pattern=args.image_pattern, **common)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the converter; return the exit status (0 success, 2 bad input or arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse already printed its message
        return int(e.code or 0)
    try:
        conversion = _convert(args)
        out = write_manifest(conversion, args.out, check_files=args.check_files)
    except (ManifestError, ValueError, OSError) as e:
        message = " ".join(str(e).split("\n"))
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(summarise(conversion, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
