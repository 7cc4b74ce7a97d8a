"""Command line: ``python -m fairmonai.data.synth <dataset> --out DIR --n N --seed S [knobs]``.

Examples::

    python -m fairmonai.data.synth oct_glaucoma --out synth/oct --n 200 --seed 0 \\
        --prevalence Black=0.6,White=0.3,Asian=0.3 --cue-strength 1 --difficulty Black=2
    python -m fairmonai.data.synth fitzpatrick17k --out synth/fitz --n 600 --seed 1 \\
        --group-proportions 1=0.3,2=0.3,3=0.2,4=0.1,5=0.05,6=0.05
    python -m fairmonai.data.synth mama_mia --out synth/mama --n 100 --seed 0 \\
        --hard-subgroup "age_group=71+,breast_density=d" --hard-strength 1.5
    python -m fairmonai.data.synth mama_mia --out synth/mama_real --n 300 --metadata-from real/manifest.csv

Knob values are passed through as text and checked by the generator: a bad knob (unknown group,
proportions not summing to 1, a prevalence outside [0, 1], n too small for every group) prints
one line ``fairmonai-synth: error: ...`` on stderr and exits with code 2; an unwritable output
exits with code 1. See :mod:`fairmonai.data.synth` for what each knob does.
"""

from __future__ import annotations

import argparse
import sys

from . import DATASETS, make_cohort

__all__ = ["main", "build_parser"]

PROG = "fairmonai-synth"

_COMMON = [
    ("--n", "number of cases (optional with --group-counts or --metadata-from)"),
    ("--seed", "integer seed >= 0 (default 0); the same seed gives byte-identical files"),
    ("--prevalence", "label rate per group, e.g. 'Black=0.6,White=0.3' or one number for all"),
    ("--cue-strength", "strength >= 0 of the group stripe cue (default 0: no cue)"),
    ("--difficulty", "noise standard-deviation multiplier per group, e.g. 'Black=2.0' (default 1)"),
    ("--group-proportions", "group shares summing to 1, e.g. 'Asian=0.2,Black=0.3,White=0.5' (default equal)"),
    ("--group-counts", "group sizes instead of shares, e.g. 'Asian=20,Black=30,White=50'"),
    ("--metadata-from", "a real manifest CSV of the same dataset: sample the attributes (and labels) of its rows"),
    ("--noise", "base standard deviation of the additive Gaussian noise"),
]
_VOLUME = [("--shape", "volume shape 'X,Y,Z'"), ("--spacing", "voxel spacing in mm 'sx,sy,sz'")]
_PHOTO = [("--shape", "image shape 'H,W'")]
_SPECIFIC = {
    "oct_glaucoma": _VOLUME,
    "rectal_mri": _VOLUME + [("--spurious-fraction", "share of masks with 1-2 spurious components (default 0.2)")],
    "mama_mia": _VOLUME + [
        ("--group-attribute", "attribute the group knobs refer to: age_group (default), menopausal_status, "
                              "breast_density"),
        ("--hard-subgroup", "cases matching every 'attribute=value' item are harder, e.g. "
                            "'age_group=71+,breast_density=d'"),
        ("--hard-strength", "s >= 0 (default 1): enhancement / (1+s), tumour volume / (1+s), noise x (1+s)"),
        ("--density-missing", "share of cases with missing breast density (default 0.2)"),
        ("--menopause-unknown", "share of cases with unknown menopausal status (default 0.25)"),
    ],
    "isic2020": _PHOTO + [("--max-images-per-patient", "patients get 1..this many images (default 4)")],
    "fitzpatrick17k": _PHOTO + [("--benign-fraction", "share of benign among non-malignant cases (default 0.25)")],
}


_EXAMPLES = __doc__.split("Examples::")[1].split("Knob values")[0].strip("\n") + "\n"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (no usage dump)."""

    def error(self, message):
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per dataset, every knob value kept as text."""
    parser = _Parser(prog=PROG, description="Write a synthetic cohort with controllable bias "
                                            "(images, cohort.json, manifest.csv).",
                     epilog="examples:\n" + _EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="dataset", metavar="dataset", required=True, parser_class=_Parser,
                                help=f"one of {', '.join(DATASETS)}")
    for name in DATASETS:
        p = sub.add_parser(name, help=f"synthetic {name} cohort", description=f"Synthetic {name} cohort.")
        p.add_argument("--out", required=True, help="output folder")
        for flag, text in _COMMON + _SPECIFIC[name]:
            p.add_argument(flag, default=None, help=text)
        p.add_argument("--quiet", action="store_true", help="no progress or summary line")
    return parser


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 I/O failure, 2 bad arguments or knobs)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return int(e.code or 0)
    knobs = {k: v for k, v in vars(args).items() if k not in ("dataset", "out", "n", "seed", "quiet")}
    try:
        make_cohort(args.dataset, args.out, args.n, "0" if args.seed is None else args.seed,
                    verbose=not args.quiet, **knobs)
    except ValueError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


if __name__ == "__main__":
    raise SystemExit(main())
