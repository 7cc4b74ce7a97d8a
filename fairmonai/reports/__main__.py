"""``python -m fairmonai.reports <predictions.csv> --out DIR``: write a fairness report.

The predictions file is checked completely before the metrics (torch, MONAI) and matplotlib are
imported, so a bad file is rejected at once. Exit status: 0 report written; 1 the input cannot be
reported on (one line on stderr, ``error: ...``, naming the file and, for a bad value, the case and
the column; nothing written); 2 a usage error (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from ..data.manifest import ManifestError
from .report import ReportInputError, write_report

#: Exit status of an input the report cannot use (argparse uses 2 for usage errors).
EXIT_INPUT_ERROR = 1


def _reference(values: list[str] | None, parser: argparse.ArgumentParser):
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    out = {}
    for v in values:
        attr, sep, group = v.partition("=")
        if not sep:
            parser.error(f"--reference-group '{v}': use GROUP, or ATTRIBUTE=GROUP for several attributes")
        out[attr] = group
    return out


def _missing_summary(report_json) -> list[str]:
    """Per attribute, the cases excluded or mapped to the unknown group (from the written report.json)."""
    missing = json.loads(report_json.read_text()).get("missing_values") or {}
    lines = ["missing attribute values (per attribute):"]
    for attr, m in missing.items():
        line = f"  {attr}: {m['n_excluded']} excluded"
        if m.get("unknown_category") is not None:
            line += f", {m['n_unknown']} mapped to '{m['unknown_category']}'"
        lines.append(line + f" (missing-value policy {m['policy'] or 'none: not in the schema'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fairmonai.reports", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("predictions", help="predictions CSV (case_id, label, score or prob_*, attributes; "
                                            "or case_id, dice, normhd/hd95, attributes)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--attributes", nargs="+", help="sensitive attribute columns (default: from --schema, "
                                                        "else low-cardinality columns)")
    parser.add_argument("--schema", help="dataset name or schema path: category order and missing-value policy "
                                         "of the attributes")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--confidence-level", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.5, help="decision threshold of a binary score")
    parser.add_argument("--eodd-strategy", choices=["max_pair", "one_vs_rest"],
                        help="EOdd for more than two groups (default: one_vs_rest with --reference-group, "
                             "else max_pair)")
    parser.add_argument("--reference-group", nargs="+", help="GROUP, or ATTRIBUTE=GROUP ...: the one-vs-rest group")
    parser.add_argument("--ts-weight", type=float, default=0.5, help="weight of PS in the total score")
    parser.add_argument("--title")
    args = parser.parse_args(argv)
    reference = _reference(args.reference_group, parser)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            files = write_report(
                args.predictions, args.out, attributes=args.attributes, schema=args.schema,
                n_bootstrap=args.n_bootstrap, confidence_level=args.confidence_level, seed=args.seed,
                threshold=args.threshold, eodd_strategy=args.eodd_strategy,
                reference_group=reference, ts_weight=args.ts_weight, title=args.title,
            )
    except (ReportInputError, ManifestError, ValueError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return EXIT_INPUT_ERROR
    for w in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)):
        print(f"warning: {w}", file=sys.stderr)
    print(f"report written to {args.out}:")
    for name, path in files.items():
        print(f"  {name:<28} {path}")
    print("\n".join(_missing_summary(files["json"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
