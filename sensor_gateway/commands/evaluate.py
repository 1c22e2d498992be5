"""``crampwatch evaluate``: score the detector on recordings and simulated nights."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sensor_gateway.commands._argtypes import count, non_negative_float, positive_float

HELP = "score the cramp detector against ground truth (recordings and/or simulated nights)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crampwatch evaluate``."""
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="recording files, or directories searched recursively for *.edf/*.bdf/*.csv "
        "that have a <name>.truth.json sidecar",
    )
    sim = parser.add_argument_group("simulated nights (generated in memory)")
    sim.add_argument(
        "--simulate", type=count, default=0, metavar="N", help="add N simulated nights"
    )
    sim.add_argument(
        "--seed-base", type=int, default=0, metavar="S", help="seeds S, S+1, ... (default: 0)"
    )
    sim.add_argument(
        "--hours",
        type=positive_float,
        default=2.0,
        metavar="H",
        help="hours per simulated night (default: 2)",
    )
    sim.add_argument(
        "--profiles",
        default="typical,plm_heavy,artefact_heavy,low_snr,quiet",
        metavar="LIST",
        help="comma-separated profiles, cycled over the nights; mains alternates 50/60 Hz "
        "(default: all five)",
    )
    rules = parser.add_argument_group("matching rules (docs/evaluation.md)")
    rules.add_argument(
        "--early-s",
        type=non_negative_float,
        default=2.0,
        help="a detected cramp may start this long before the true onset (default: 2)",
    )
    rules.add_argument(
        "--tolerance-s",
        type=positive_float,
        default=0.5,
        help="burst sets: largest |detected - labelled| onset of a match (default: 0.5)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print a JSON report instead of tables")
    out.add_argument(
        "--plot", type=Path, metavar="DIR", help="write a PNG per cramp and false alarm to DIR"
    )
    out.add_argument(
        "--plot-limit",
        type=count,
        default=40,
        metavar="N",
        help="at most N plots per recording (default: 40)",
    )
    out.add_argument(
        "--fail-on-targets",
        action="store_true",
        help="exit 1 when a pooled metric misses its target (default: always exit 0)",
    )


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the report, optionally plot; exit 0 unless --fail-on-targets fails."""
    from tqdm import tqdm  # noqa: PLC0415 (keep --help fast)

    from sensor_gateway import evaluation as ev  # noqa: PLC0415
    from sensor_gateway.errors import CrampwatchError  # noqa: PLC0415

    profiles = [p.strip() for p in str(args.profiles).split(",") if p.strip()]
    if args.simulate and not profiles:
        raise CrampwatchError("--profiles: give at least one profile")
    sources: list[ev.Source] = []
    sources.extend(ev.discover_recordings(args.paths))
    if args.simulate:
        sources.extend(
            ev.simulated_sources(
                args.simulate, hours=args.hours, seed_base=args.seed_base, profiles=profiles
            )
        )
    if not sources:
        raise CrampwatchError(
            "nothing to evaluate: name recordings/directories (with truth sidecars) "
            "or use --simulate N"
        )

    results = []
    bar = tqdm(sources, unit="rec", file=sys.stderr, disable=not sys.stderr.isatty())
    for source in bar:
        bar.set_postfix_str(source.name, refresh=True)
        results.append(
            ev.evaluate_source(source, early_s=args.early_s, tolerance_s=args.tolerance_s)
        )
    summary = ev.summarize(results)

    if args.json:
        print(json.dumps(ev.report_json(results, summary), indent=1))
    else:
        print(ev.format_report(results, summary))

    if args.plot is not None:
        from sensor_gateway.plots import plot_result  # noqa: PLC0415

        written = 0
        for result in tqdm(results, unit="rec", file=sys.stderr, disable=not sys.stderr.isatty()):
            written += len(plot_result(result, args.plot, limit=args.plot_limit))
        print(f"wrote {written} plot(s) to {args.plot}", file=sys.stderr)

    if args.fail_on_targets:
        failed = ev.failed_targets(summary)
        if failed:
            print(f"crampwatch: targets missed: {', '.join(failed)}", file=sys.stderr)
            return 1
    return 0
