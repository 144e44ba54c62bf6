"""`bmvit bench`: the quick run's table and JSON, the timing helpers, and the chunked attention/MLP of
MViT (a performance change that must not change a number)."""

from __future__ import annotations

import json

import pytest
import torch

import bmvit
from bmvit.bench import SECTIONS, BenchConfig, MatmulReference, Row, Timing, format_table, time_interleaved
from bmvit.cli import main
from bmvit.cli.bench import SECTION_NAMES
from bmvit.models.backbones import mvit


def test_quick_bench_prints_the_table_and_writes_positive_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--threads", "1", "--repeats", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert set(report) == {"machine", "config", "results", "elapsed_s", "rows"}
    assert report["machine"]["nproc"] >= 1 and report["machine"]["cpu_model"]
    assert report["config"] == {"threads": 1, "repeats": 1, "quick": True, "sections": list(SECTIONS)}
    results = report["results"]
    assert set(results) == set(SECTIONS)
    assert results["matmul"]["gflops"] > 0
    for name in ("mvit_tiny", "bmvit_mvit_tiny"):
        assert results["backbone"][name]["gmacs"] > 0
        assert results["backbone"][name]["forward"]["median_s"] > 0
        assert len(results["backbone"][name]["forward_backward"]["runs_s"]) == 1
    assert results["matcher"]["match"]["median_s"] > 0 and results["matcher"]["num_actors"] >= 8
    assert 0 < results["step"]["criterion_median_s"] < results["step"]["step"]["median_s"]
    assert results["step"]["step_with_loader"]["median_s"] > 0 and results["step"]["step"]["matmul_gflops"] > 0
    assert all(results["loader"][f"{s}_workers{w}"] > 0 for s in ("video", "frames") for w in (0, 1, 2))
    assert results["evaluator"]["num_rows"] == 2000 and results["evaluator"]["total_s"] > 0
    assert results["predict"]["keyframes"] == 4  # a 4 s synthetic video at one key frame per second
    assert 0 < results["predict"]["forward_s"] < results["predict"]["seconds"]
    for flag in ("off", "on"):
        memory = results["memory"][f"checkpointing_{flag}"]
        assert memory["checkpointing"] == (flag == "on")
        assert memory["peak_rss_mb"] >= memory["step_peak_mb"] >= memory["rss_before_step_mb"] > 0
    # torchvision is not installed beside bmvit: its section says so instead of failing
    if results["torchvision"] is None:
        assert "skipped: torchvision does not import here" in printed
    # the table: a header, then one line per row, every measured value positive
    rows = [Row(**r) for r in report["rows"]]
    assert {r.section for r in rows} == set(SECTIONS)
    assert all(r.value > 0 for r in rows if r.value is not None and r.unit)
    assert printed.splitlines()[1].startswith("section") and len(printed.splitlines()) == len(rows) + 3
    assert "x matmul rate" in printed and "x step time" in printed


def test_loader_on_a_data_root_reports_each_source_against_pillow(tmp_path, capsys):
    from bmvit.bench import write_ava_layout
    from bmvit.data.dataset import AVADataset

    root = tmp_path / "root"
    info = write_ava_layout(root, num_videos=1, num_frames=150, size=(128, 96), videos=True)
    assert info["keyframes"] == 2 and AVADataset(root, "train", source="frames").keyframe_keys() == [
        ("bench000", 902), ("bench000", 903)]
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--only", "loader", "--threads", "1", "--repeats", "1", "--data", str(root),
            "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    roots = json.loads(out.read_text())["results"]["loader"]["roots"]
    assert [r["source"] for r in roots] == ["frames", "video"]
    for r in roots:
        assert r["frame_size"] == [96, 128] and r["clip"] == [8, 64, 64] and r["num_clips"] == 2
        assert all(r[k] > 0 for k in ("workers0", "workers1", "read_full", "read_min_size", "pillow_full_decode"))
    assert roots[0]["decoded_size_at_min_size"] == [96, 128]  # a JPEG too small to halve for 64x64
    assert roots[1]["decoded_size_at_min_size"] == [64, 85]  # video: converted straight to the reduced size
    assert "frames 128x96 (root): training clips, 0 workers" in printed and "x Pillow's full decode time" in printed
    assert "Pillow full decode of the same JPEGs" in printed
    assert main(["bench", "--only", "matmul", "--data", str(root)]) == 2
    assert "--data is for the loader section" in capsys.readouterr().err


def test_bad_section_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown benchmark section.*nope.*matmul"):
        BenchConfig(sections=("matmul", "nope"))
    assert main(["bench", "--only", "nope"]) == 2
    assert "unknown benchmark section" in capsys.readouterr().err


def test_cli_lists_the_same_sections_as_the_library():
    assert SECTION_NAMES == SECTIONS  # the CLI keeps its own copy so that `bmvit --help` does not import torch


def test_matmul_reference_counts_two_flops_per_multiply_add():
    # 2 * 512^3 FLOPs in one second; at n = 256 a call is 8 products, the same work
    assert MatmulReference(512).gflops(Timing(runs_s=[1.0], cpu_s=[1.0])) == pytest.approx(0.268435456)
    assert MatmulReference(256).calls == 8
    assert MatmulReference(256).gflops(Timing(runs_s=[0.5, 2.0, 1.0], cpu_s=[1.0])) == pytest.approx(0.268435456)


def test_time_interleaved_warms_up_then_alternates():
    calls = []
    timings = time_interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=2)
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3
    assert [len(timings[k].runs_s) for k in "ab"] == [3, 3]
    assert all(t >= 0 for k in "ab" for t in timings[k].runs_s)


def test_format_table_aligns_columns_and_shows_missing_values():
    rows = [Row("matmul", "fp32 mm", 200.0, "GFLOP/s", note="ref"),
            Row("torchvision", "skipped", None, "", note="no torchvision"),
            Row("backbone", "x forward", 0.5, "s", 0.25, "matmul rate")]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["section", "measurement", "value", "ratio", "note"]
    assert set(lines[1]) == {"-"}
    value, ratio = lines[0].index("value"), lines[0].index("ratio")
    assert lines[2][value:].startswith("200 GFLOP/s") and lines[3][value:].startswith("- ")
    assert lines[4][value:].startswith("0.5 s") and lines[4][ratio:].startswith("0.25 x matmul rate")


@pytest.mark.parametrize("overrides", [{}, {"cls_embed": False}, {"residual_pooling": False},
                                       {"rel_pos_spatial": False, "rel_pos_temporal": False}])
def test_chunked_attention_and_mlp_give_the_unchunked_numbers(monkeypatch, overrides):
    torch.manual_seed(0)
    model = bmvit.create_backbone("bmvit_mvit_tiny", input_size=(8, 64, 64), **overrides)
    x = torch.randn(2, 3, 8, 64, 64)

    def run() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        tokens = model.train()(x)
        tokens.square().mean().backward()
        return tokens.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    whole_tokens, whole_grads = run()
    # 8 KiB: every block splits its queries (1-60 per mask chunk) and its MLP tokens (1-10 per chunk)
    monkeypatch.setattr(mvit, "_CHUNK_BYTES", 8192)
    chunked_tokens, chunked_grads = run()
    torch.testing.assert_close(chunked_tokens, whole_tokens, atol=1e-5, rtol=1e-5)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), whole_tokens, atol=1e-5, rtol=1e-5)


def test_device_benchmark_logic_runs_on_the_cpu():
    """``bmvit bench --device cuda``'s functions are device-generic: on the CPU, with a tiny detector, each
    run reports a positive rate, and the MFU is the FLOP rate over the matmul reference's."""
    from bmvit.bench import (
        DeviceMatmulReference,
        bench_device_infer,
        bench_device_matmul,
        bench_device_train,
        device_table_rows,
    )

    cpu = torch.device("cpu")
    matmul = bench_device_matmul(DeviceMatmulReference(128, cpu), repeats=1)
    assert matmul["dtype"] == "float32" and matmul["tflops"] > 0
    train = bench_device_train("bmvit_mvit_tiny", (4, 32, 32), [("plain", 2), ("checkpointing", 2)], 1,
                               matmul["tflops"], cpu)
    assert [(r["variant"], r["batch"]) for r in train["runs"]] == [("plain", 2), ("checkpointing", 2)]
    for r in train["runs"]:
        assert r["clips_per_s"] == pytest.approx(2 / r["median_s"])
        flops = 3 * train["forward_gflops_per_clip"] * 1e9 * r["clips_per_s"]
        assert r["mfu"] == pytest.approx(flops / (matmul["tflops"] * 1e12))
    infer = bench_device_infer("bmvit_mvit_tiny", (4, 32, 32), [1, 3], 1, matmul["tflops"], cpu)
    assert [r["batch"] for r in infer["runs"]] == [1, 3] and all(r["keyframes_per_s"] > 0 for r in infer["runs"])
    rows = device_table_rows({"device_matmul": matmul, "device_train": train, "device_infer": infer})
    assert [r.section for r in rows] == ["matmul", "train", "train", "infer", "infer"]
    assert rows[1].unit == "clips/s" and rows[1].ratio == train["runs"][0]["mfu"]


def test_bench_device_cuda_without_a_gpu_is_a_one_line_error(capsys):
    from bmvit.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no such CUDA device here" in capsys.readouterr().err
