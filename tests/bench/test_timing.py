"""The bench's timing helpers: the matmul reference's FLOP count and interleaved timing."""

from __future__ import annotations

import pytest

from bmvit.bench.timing import MatmulReference, Timing, time_interleaved


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
