"""The ``bmvit bench`` table: the results of a run turned into ``Row``s, each with its ratio to a
reference measured in the same run, and printed as aligned text.

Only dicts of numbers come in (the ``results`` of ``run_benchmarks`` / ``run_device_benchmarks``), so
nothing here needs torch.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One line of the table: ``value unit``, and ``ratio`` of it to the reference named in ``ratio_of``."""

    section: str
    name: str
    value: float | None
    unit: str
    ratio: float | None = None
    ratio_of: str = ""
    note: str = ""


def table_rows(results: dict[str, Any]) -> list[Row]:
    """Returns the CPU report's table: one ``Row`` per measurement, with its ratio to a reference measured
    with it (the matmul rate, torchvision's time, the step time or Pillow's decode)."""
    r = results["matmul"]
    during = _matmul_rates(results)
    rows = [Row("matmul", f"fp32 mm {r['n']}^2 at the start", r["gflops"], "GFLOP/s",
                note=f"between the timed runs: {min(during):.0f}-{max(during):.0f} GFLOP/s" if during else "")]
    for name, r in results.get("backbone", {}).items():
        rows += _model_rows(name, r)
    rows += _torchvision_rows(results.get("torchvision", False))
    if "matcher" in results:
        r = results["matcher"]
        what = f"batch {r['batch']}, {r['num_tokens']} tokens, {r['num_actors']} actors"
        rows.append(Row("matcher", f"Hungarian matching, {what}", 1e3 * r["match"]["median_s"], "ms"))
        rows.append(Row("matcher", "criterion fwd+bwd (matching + losses)", 1e3 * r["criterion"]["median_s"], "ms"))
    rows += _step_rows(results)
    step_s = results.get("step", {}).get("step", {}).get("median_s")
    rows += _loader_root_rows(results.get("loader", {}).get("roots", []))
    for key, rate in results.get("loader", {}).items():
        if key.startswith(("video_", "frames_")):
            source, workers = key.split("_workers")
            clip = results["loader"]["clip"]
            rows.append(Row("loader", f"{source} {clip[0]}x{clip[1]}, {workers} workers", rate, "clips/s",
                            rate * step_s if step_s else None, "step's clips/s" if step_s else ""))
    if "evaluator" in results:
        r = results["evaluator"]
        rows.append(Row("evaluator", f"frame-mAP, {r['num_rows']} rows (read + evaluate)", r["total_median_s"], "s",
                        note=f"fastest {r['total_s']:.2f} s; the official evaluator takes ~26 s here "
                             "(docs/design.md#evaluation)"))
    if "predict" in results:
        r = results["predict"]
        rows.append(Row("predict", f"{r['name']} {_size(r['input'])} end to end, batch 1", r["keyframes_per_s"],
                        "key frames/s", r["seconds"] / r["keyframes"] / r["forward_s"], "detector forward",
                        f"{r['keyframes']} key frames"))
    return rows + _memory_rows(results)


def device_table_rows(results: dict[str, Any]) -> list[Row]:
    """Returns the accelerator report's table: rates, with their MFU as the ratio to the matmul reference."""
    m = results["device_matmul"]
    rows = [Row("matmul", f"{m['dtype']} mm {m['n']}^2", m["tflops"], "TFLOP/s", note="the MFU reference")]
    train = results["device_train"]
    for r in train["runs"]:
        what = f"{train['name']} {_size(train['input'])} train step, batch {r['batch']}, {r['variant']}"
        if "error" in r:
            rows.append(Row("train", what, None, "clips/s", note=r["error"]))
            continue
        memory = f"peak {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else ""
        rows.append(Row("train", what, r["clips_per_s"], "clips/s", r["mfu"], "MFU of the matmul rate", memory))
    infer = results["device_infer"]
    for r in infer["runs"]:
        what = f"{infer['name']} {_size(infer['input'])} inference, batch {r['batch']}"
        rows.append(Row("infer", what, r["keyframes_per_s"], "key frames/s", r["mfu"], "MFU of the matmul rate"))
    return rows


def format_table(rows: list[Row | dict[str, Any]]) -> str:
    """Returns an aligned text table: section, measurement, value and unit, ratio and its reference, note;
    a header line and a rule of dashes first. ``rows`` may be ``Row``s or their dicts (as in the JSON)."""
    rows = [Row(**r) if isinstance(r, dict) else r for r in rows]
    lines = []
    for r in rows:
        value = "-" if r.value is None else f"{r.value:.4g}"
        ratio = "" if r.ratio is None else f"{r.ratio:.3g} x {r.ratio_of}"
        lines.append((r.section, r.name, f"{value} {r.unit}".strip(), ratio, r.note))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    header = ("section", "measurement", "value", "ratio", "note")
    widths = [max(w, len(h)) for w, h in zip(widths, header)]
    out = []
    for line in [header, *lines]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line[:4], widths)) + "  " + line[4])
    out.insert(1, "-" * len(out[0]))
    return "\n".join(o.rstrip() for o in out)


def format_machine(report: dict[str, Any]) -> str:
    """Returns one paragraph: date, CPU, cores, threads, load at start and end, versions, repeats."""
    m, c = report["machine"], report["config"]
    load = ", ".join(f"{v:.2f}" for v in m["loadavg"])
    load_end = ", ".join(f"{v:.2f}" for v in m.get("loadavg_end", []))
    return (f"{m['date_utc']}; {m['cpu_model']}, {m['nproc']} cores, {c['threads']} threads; load average "
            f"{load} at start, {load_end} at end; torch {m['torch']}, torchvision {m['torchvision'] or 'absent'}; "
            f"GPU: {m['gpu'] or 'none'}; median of {c['repeats']} runs after a warm-up"
            f"{' (quick sizes)' if c['quick'] else ''}")


# ---------------------------------------------------------------------------------------------------------
# the rows of each section


def _matmul_rates(results: Any) -> list[float]:
    """Every ``matmul_gflops`` in the results: the reference rate as the load changed during the run."""
    if isinstance(results, dict):
        own = [results["matmul_gflops"]] if "matmul_gflops" in results else []
        return own + [rate for value in results.values() for rate in _matmul_rates(value)]
    return []


def _size(thw: list[int]) -> str:
    return "x".join(str(v) for v in thw[:2])


def _rate_row(section: str, name: str, timing: dict[str, Any], flops: float, **extra: Any) -> Row:
    """``timing``'s median seconds, and its FLOP/s as a fraction of the matmul rate measured with it."""
    achieved = flops / timing["median_s"] / 1e9
    note = f"{achieved:.0f} GFLOP/s of {timing['matmul_gflops']:.0f}" + extra.pop("note", "")
    return Row(section, name, timing["median_s"], "s", achieved / timing["matmul_gflops"], "matmul rate", note)


def _model_rows(name: str, r: dict[str, Any]) -> list[Row]:
    label = f"{name} {_size(r['input'])}"
    note = "; timed in the torchvision comparison" if r.get("timed_in") else ""
    return [_rate_row("backbone", f"{label} forward", r["forward"], 2e9 * r["gmacs"],
                      note=f" ({r['gmacs']:.1f} GMACs){note}"),
            _rate_row("backbone", f"{label} fwd+bwd", r["forward_backward"], 6e9 * r["gmacs"], note=note)]


def _torchvision_rows(r: dict[str, Any] | None | bool) -> list[Row]:
    if r is False:  # section not run
        return []
    if r is None:
        return [Row("torchvision", "mvit_v2_s comparison", None, "", note="skipped: torchvision does not import here")]
    rows = [Row("torchvision", "max |ours - torchvision| of the output tokens", r["max_abs_diff"], "",
                note=f"same weights, torchvision {r['torchvision_version']}")]
    label_theirs, label_ours = r["models"]
    for key, what, mult in (("forward", "forward", 2e9), ("forward_backward", "fwd+bwd", 6e9)):
        flops = mult * r["gmacs"]
        theirs, ours = r[key]["torchvision"], r[key]["ours"]
        rows.append(_rate_row("torchvision", f"{label_theirs} {_size(r['input'])} {what}", theirs, flops))
        pairwise = statistics.median(a / b for a, b in zip(ours["runs_s"], theirs["runs_s"]))
        cpu = ours["cpu_median_s"] / theirs["cpu_median_s"]
        rows.append(Row("torchvision", f"{label_ours} {_size(r['input'])} {what}", ours["median_s"], "s",
                        ours["median_s"] / theirs["median_s"], "torchvision's time",
                        f"pairwise median {pairwise:.2f}, CPU time {cpu:.2f} x torchvision's; target <= 0.8"))
    return rows


def _step_rows(results: dict[str, Any]) -> list[Row]:
    if "step" not in results:
        return []
    r = results["step"]
    step_s = r["step"]["median_s"]
    rows = [_rate_row("step", f"{r['name']} {_size(r['input'])} train step, batch 1", r["step"], 6e9 * r["gmacs"]),
            Row("step", "criterion inside the step", 1e3 * r["criterion_median_s"], "ms",
                r["criterion_median_s"] / step_s, "step time", "target < 0.05")]
    if "matcher" in results:
        batch = results["matcher"]["batch"]
        criterion_s = results["matcher"]["criterion"]["median_s"]
        rows.append(Row("step", f"criterion at batch {batch} / {batch} steps at batch 1", 1e3 * criterion_s, "ms",
                        criterion_s / (batch * step_s), "step time", "target < 0.05"))
    if "step_with_loader" in r:
        loaded = r["step_with_loader"]["median_s"]
        rows.append(Row("step", "train step fed by a 2-worker loader", loaded, "s", loaded / step_s,
                        "step on a fixed clip", "interleaved; 1.0 = loading hidden behind compute"))
    return rows


def _loader_root_rows(results: list[dict[str, Any]]) -> list[Row]:
    rows = []
    for r in results:
        h, w = r["frame_size"]
        where = f"{r['source']} {w}x{h} ({Path(r['root']).name})"
        ref = r.get("pillow_full_decode")

        def ratio(rate: float) -> tuple[float | None, str]:
            return (ref / rate, "Pillow's full decode time") if ref else (None, "")

        for key in sorted(k for k in r if k.startswith("workers")):
            n = key[len("workers"):]
            clips = f"{r['num_clips']} key frames, clips {r['clip'][0]}x{r['clip'][1]}"
            rows.append(Row("loader", f"{where}: training clips, {n} worker{'s' if n != '1' else ''}", r[key],
                            "clips/s", *ratio(r[key]), clips))
        dh, dw = r["decoded_size_at_min_size"]
        rows.append(Row("loader", f"{where}: read_clip at stored size", r["read_full"], "clips/s",
                        *ratio(r["read_full"]), "source alone, no transforms"))
        rows.append(Row("loader", f"{where}: read_clip, min_size {r['clip'][1]}", r["read_min_size"], "clips/s",
                        *ratio(r["read_min_size"]), f"decoded at {dw}x{dh}"))
        if "read_encoded" in r:
            rows.append(Row("loader", f"{where}: files read undecoded", r["read_encoded"], "clips/s",
                            *ratio(r["read_encoded"]), "a worker's share of data.decode=device"))
        if ref:
            rows.append(Row("loader", f"{where}: Pillow full decode of the same JPEGs", ref, "clips/s",
                            note="reference: np.asarray(Image.open(p).convert('RGB'))"))
    return rows


def device_decoding_rows(r: dict[str, Any]) -> list[Row]:
    """Table rows of ``loader.bench_device_decoding``: each worker count's clips/s decoding in the workers and on
    the device (the latter also as a ratio to the former), the decoder alone, and Pillow's one-core reference."""
    h, w = r["frame_size"]
    where = f"frames {w}x{h} ({Path(r['root']).name})"
    clips = f"batch {r['batch_size']}, clips {r['clip'][0]}x{r['clip'][1]}, on {r['device']}"
    rows = []
    for key in sorted((k for k in r if k.startswith("workers")), key=lambda k: int(k[len("workers"):])):
        n = key[len("workers"):]
        rows.append(Row("decode", f"{where}: {n} workers decoding", r[key], "clips/s", note=clips))
        rows.append(Row("decode", f"{where}: {n} workers reading, the device decoding", r[f"device{n}"], "clips/s",
                        r[f"device{n}"] / r[key] if r[key] else None, f"{n} workers decoding", clips))
    rows.append(Row("decode", f"{where}: the device's decoder alone, one batch's files", r["decoder_only"], "clips/s",
                    note="files read beforehand"))
    rows.append(Row("decode", f"{where}: Pillow full decode of the same JPEGs, one core", r["pillow_full_decode"],
                    "clips/s", note="reference: np.asarray(Image.open(p).convert('RGB'))"))
    return rows


def _memory_rows(results: dict[str, Any]) -> list[Row]:
    if "memory" not in results:
        return []
    r = results["memory"]
    off, on = r["checkpointing_off"], r["checkpointing_on"]
    increase_off = off["step_peak_mb"] - off["rss_before_step_mb"]
    rows = []
    for what, m in (("without", off), ("with", on)):
        increase = m["step_peak_mb"] - m["rss_before_step_mb"]
        rows.append(Row("memory", f"{m['name']} {_size(m['input'])} step {what} checkpointing, peak RSS",
                        m["step_peak_mb"], "MB", increase / increase_off if increase_off > 0 else None,
                        "step's increase without checkpointing",
                        f"{m['rss_before_step_mb']:.0f} MB before the step, +{increase:.0f} MB"))
    return rows


__all__ = ["Row", "device_table_rows", "format_machine", "format_table", "table_rows"]
