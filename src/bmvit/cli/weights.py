"""``bmvit weights list | download NAME [NAME ...] | path NAME``: the weights bmvit knows by name, and its cache.

    bmvit weights list                          # name, kind, source, license, size, where it is, dataset
    bmvit weights download mvitv2_s_16x4.k400   # into $BMVIT_HOME/weights (default ~/.cache/bmvit)
    bmvit weights path mvitv2_s_16x4.k400       # where the file is, or would be

Everything here reads ``bmvit.hub`` only, which imports no torch. ``download`` exits 0 when every name is in
place, 1 when one failed (one line per failure on stderr); an unknown name is an error like any other.
"""

from __future__ import annotations

import argparse

KINDS = ("backbone", "detector")  # bmvit.hub.Kind, spelled out so that --help needs no import


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="weights_command", metavar="SUBCOMMAND")
    sub.required = True
    listing = sub.add_parser("list", help="the known weights: source, license, size, whether cached",
                             description="the known weights: source, license, size, whether cached")
    listing.add_argument("--kind", choices=KINDS, default=None, help="only backbone weights, or only detectors")
    download = sub.add_parser("download", help="download weights into the cache by name",
                              description="download weights into the cache by name (or address)")
    download.add_argument("names", nargs="+", metavar="NAME", help="record names (`bmvit weights list`) or URLs")
    download.add_argument("--retries", type=int, default=3, help="tries after a failed one (default 3)")
    path = sub.add_parser("path", help="print where the file of a name is (or would be)",
                          description="print where the file of a name is (or would be once downloaded)")
    path.add_argument("name", metavar="NAME")


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "download": _download, "path": _path}[args.weights_command](args)


def _list(args: argparse.Namespace) -> int:
    from bmvit import hub

    specs = [s for s in hub.KNOWN_WEIGHTS.values() if args.kind is None or s.kind == args.kind]
    header = ("name", "kind", "source", "license", "size", "here", "classes", "dataset")
    rows = [header] + [_row(spec) for spec in specs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"\ncache: {hub.weights_dir()} (set {hub.HOME_ENV} to move it)")
    try:
        base = hub.mirror()
    except hub.WeightsError as err:
        base = f"unusable: {err}"
    if base:
        print(f"mirror: {base} ({hub.MIRROR_ENV})")
    if hub.is_offline():
        print(f"offline: {hub.OFFLINE_ENV} is set, nothing is downloaded")
    return 0


def _row(spec) -> tuple[str, ...]:
    """One line of ``bmvit weights list``: where the file comes from and whether it is here."""
    import urllib.parse

    from bmvit import hub
    from bmvit.data.download import human_bytes, part_path

    shipped, cached = hub.shipped_path(spec), hub.cache_path(spec)
    try:
        url = hub.download_url(spec)
    except hub.WeightsError:  # a bad mirror: the record's own address, and `download` says what is wrong
        url = spec.url
    if shipped is not None:
        source, here, size = "bmvit (shipped)", "shipped", human_bytes(shipped.stat().st_size)
    else:
        source = urllib.parse.urlsplit(url).netloc if url else "-"
        if spec.manual and url == spec.url:
            source += " (manual)"
        if cached.is_file():
            here, size = "cached", human_bytes(cached.stat().st_size)
        elif part_path(cached).is_file():
            here, size = "partial", human_bytes(part_path(cached).stat().st_size)
        else:
            here, size = "-", "-"
    license_ = spec.license.split(" (")[0].split(";")[0]  # the license itself; the record has the details
    classes = str(spec.num_classes) if spec.num_classes else "-"
    return spec.name, spec.kind, source, license_, size, here, classes, spec.dataset or "-"


def _download(args: argparse.Namespace) -> int:
    import sys

    from bmvit import hub

    failed = 0
    for name in args.names:
        try:
            path = hub.resolve(name, retries=max(0, args.retries))
        except (hub.WeightsError, FileNotFoundError) as err:
            failed += 1
            print(f"bmvit weights download: {name}: {err}", file=sys.stderr)
            continue
        print(f"{name}: {path}")
    return 1 if failed else 0


def _path(args: argparse.Namespace) -> int:
    import sys

    from bmvit import hub

    try:
        spec = hub.find_weights(args.name)
    except hub.UnknownWeightsError as err:
        print(f"bmvit weights path: error: {err}", file=sys.stderr)
        return 2
    print(hub.local_path(spec) or hub.cache_path(spec))
    return 0
