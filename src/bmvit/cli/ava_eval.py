"""``bmvit ava-eval``: frame-mAP@0.5 of an AVA detection CSV, exactly as the official evaluator computes it.

    bmvit ava-eval --groundtruth ava_val_v2.2.csv --detections dets.csv \\
        --labelmap ava_action_list_v2.2_for_activitynet_2019.pbtxt \\
        --exclusions ava_val_excluded_timestamps_v2.2.csv [--protocol slowfast] \\
        [--json result.json] [--plot per_class.png] [--compare other.json]

Prints one line per label-map class (id, name, AP; "n/a" without ground truth) and, last, ``mAP: <value>``
with every digit. A bad file is reported on stderr with its name and line, exit code 2.
"""

from __future__ import annotations

import argparse

PROTOCOLS = ("activitynet", "slowfast")  # bmvit.evaluation.frame_map.AVA_PROTOCOLS, without importing numpy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--groundtruth", "-g", required=True, help="annotation CSV (video_id, timestamp, x1, y1, "
                        "x2, y2, action_id, person_id)")
    parser.add_argument("--detections", "-d", required=True, help="detection CSV (..., action_id, score)")
    parser.add_argument("--labelmap", "-l", required=True, help="label-map .pbtxt: the evaluated classes")
    parser.add_argument("--exclusions", "-e", default=None, help="excluded-timestamps CSV (video_id, timestamp)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="activitynet",
                        help="activitynet: the official evaluator (50 rows per key frame, sorted by score); "
                             "slowfast: PySlowFast's copy (no cap, file order). Default: activitynet")
    parser.add_argument("--json", default=None, metavar="OUT", help='write {"mAP", "protocol", "per_class"} here')
    parser.add_argument("--plot", default=None, metavar="FILE.png",
                        help="per-class AP bar chart, sorted; with --compare, the comparison figure")
    parser.add_argument("--compare", default=None, metavar="OTHER.json",
                        help="a result JSON to compare with: per-class differences drawn to --plot")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from bmvit.evaluation.frame_map import evaluate_ava_files
    from bmvit.evaluation.plot import load_result_json, plot_compare, plot_per_class_ap

    def fail(message: str) -> int:
        print(f"bmvit ava-eval: error: {message}", file=sys.stderr)
        return 2

    if args.compare and not args.plot:
        return fail("--compare needs --plot FILE.png (where the comparison figure is written)")
    try:
        other = load_result_json(args.compare) if args.compare else None
        result = evaluate_ava_files(args.groundtruth, args.detections, args.labelmap, args.exclusions,
                                    protocol=args.protocol)
    except (ValueError, OSError) as err:
        return fail(str(err))

    width = max((len(c.name) for c in result.per_class), default=0)
    for c in result.per_class:
        ap = "n/a (no ground truth)" if c.ap is None else repr(c.ap)
        print(f"{c.id:>4}  {c.name:<{width}}  {ap}")
    print(f"protocol: {result.protocol}; detections used: {result.num_detections_used} "
          f"(capped: {result.num_detections_capped}, invalid boxes: {result.num_detections_invalid}); "
          f"ground-truth boxes: {result.num_groundtruth}")
    try:
        if args.json:
            Path(args.json).write_text(json.dumps(result.to_json(), indent=1) + "\n")
        if args.plot and other is not None:
            comparison = plot_compare(result, other, args.plot, names=(Path(args.detections).stem,
                                                                      Path(args.compare).stem))
            print(f"compared with {args.compare} (mAP {comparison.other_mAP!r}): better in {comparison.wins}, "
                  f"worse in {comparison.losses} of {len(comparison.classes)} classes; figure: {args.plot}")
        elif args.plot:
            plot_per_class_ap(result, args.plot)
            print(f"per-class AP figure: {args.plot}")
    except (ValueError, OSError) as err:
        return fail(str(err))
    print(f"mAP: {result.mAP!r}")
    return 0
