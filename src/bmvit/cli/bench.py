"""``bmvit bench [--json OUT] [--quick] [--only a,b] [--threads N] [--repeats N] [--data ROOT ...]``: what
bmvit costs here.

Prints a table of times and rates, each with its ratio to a reference measured in the same run
(this machine's fp32 matmul rate, torchvision's MViTv2-S when torchvision imports, the training
step), and optionally writes every number as JSON. Sections: see ``bmvit.bench.cpu``. ``--data ROOT``
(repeatable) runs the loader section on AVA-layout roots (frame folders and/or videos) instead of its
synthetic dataset, each against Pillow's full-size decode of the same JPEGs; for one core:
``taskset -c 0 bmvit bench --only loader --threads 1 --data ROOT``. ``--device cuda --data ROOT`` compares
decoding a root's JPEG frames in the loader workers with decoding them on the GPU (``data.decode``).
"""

from __future__ import annotations

import argparse

# bmvit.bench.cpu.SECTIONS, repeated here so that building the parser does not import torch.
SECTION_NAMES = ("matmul", "backbone", "torchvision", "matcher", "step", "loader", "evaluator", "predict", "memory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the full report as JSON to this file")
    parser.add_argument("--quick", action="store_true", help="tiny models and sizes (seconds; for tests)")
    parser.add_argument("--only", default=None, metavar="A,B",
                        help=f"run only these sections (the matmul reference always runs): {','.join(SECTION_NAMES)}")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement after one warm-up")
    parser.add_argument("--device", default="cpu", metavar="cpu|cuda|cuda:N",
                        help="cpu (default): the sections above; cuda: the paper's detector (bmvit_mvitv2_s, 16x256) on "
                             "the GPU instead: bf16 matmul reference, training clips/s and MFU at several batch sizes "
                             "with and without activation checkpointing and torch.compile, peak memory, inference "
                             "key frames/s at batch 1 and 16 (--quick: fewer runs)")
    parser.add_argument("--data", action="append", default=None, metavar="ROOT",
                        help="loader section: benchmark this AVA-layout root (ROOT/frames and/or ROOT/videos, "
                             "annotations/ava_train_v2.2.csv) instead of a synthetic dataset; repeatable. With "
                             "--device cuda: training clips/s from ROOT/frames decoded in the loader workers "
                             "against on the GPU (data.decode), instead of the model benchmarks")


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from bmvit.bench import SECTIONS, BenchConfig, format_machine, format_table, run_benchmarks

    if args.device != "cpu":
        return _run_on_device(args)
    sections = SECTIONS if args.only is None else tuple(s.strip() for s in args.only.split(",") if s.strip())
    try:
        cfg = BenchConfig(threads=args.threads, repeats=args.repeats, quick=args.quick, sections=sections)
    except ValueError as err:
        print(f"bmvit bench: {err}", file=sys.stderr)
        return 2
    if args.data and "loader" not in cfg.sections:
        print("bmvit bench: --data is for the loader section (add it to --only)", file=sys.stderr)
        return 2
    report = run_benchmarks(cfg, log=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True),
                            data_roots=args.data or ())
    print(format_machine(report))
    print(format_table(report["rows"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def _run_on_device(args: argparse.Namespace) -> int:
    import json
    import sys

    import torch

    from bmvit.bench import format_table, run_device_benchmarks

    if not args.device.startswith("cuda") or not torch.cuda.is_available():
        print(f"bmvit bench: --device {args.device}: no such CUDA device here (torch {torch.__version__}, CUDA "
              f"{torch.version.cuda}); use --device cpu", file=sys.stderr)
        return 2
    if args.only:
        print("bmvit bench: --only is for the CPU sections, not --device cuda", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if args.data:
        return _decoding_on_device(args, device)
    report = run_device_benchmarks(device, args.repeats, args.quick,
                                   log=lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
    m = report["machine"]
    print(f"{m['date_utc']}; {m['gpu']}; torch {m['torch']}; median of {args.repeats} runs after a warm-up"
          f"{' (quick)' if args.quick else ''}")
    print(format_table(report["rows"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


def _decoding_on_device(args: argparse.Namespace, device) -> int:
    """``--device cuda --data ROOT``: JPEG frames decoded in the loader workers against on the GPU (``data.decode``)."""
    import json
    import sys
    from dataclasses import asdict

    from bmvit.bench.loader import bench_device_decoding
    from bmvit.bench.report import device_decoding_rows, format_table

    results, rows = [], []
    for root in args.data:
        print(f"[bench] decoding on {device} against in the workers: {root}", file=sys.stderr, flush=True)
        try:
            result = bench_device_decoding(root, device, repeats=args.repeats,
                                           **({"batches": 6, "workers": (2,)} if args.quick else {}))
        except (RuntimeError, FileNotFoundError, ValueError) as err:
            print(f"bmvit bench: {err}", file=sys.stderr)
            return 1
        results.append(result)
        rows += device_decoding_rows(result)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"decoding": results, "rows": [asdict(r) for r in rows]}, f, indent=1)
    return 0
