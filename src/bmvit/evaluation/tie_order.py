"""The order the official evaluators give tied scores, whatever NumPy runs them.

AVA's official evaluator and ACT's frame-mAP rank detections with ``np.argsort`` (NumPy's default kind,
not stable), so detections with equal scores come out in an order set by the sort's algorithm, and
AP depends on that order wherever a tie straddles true and false positives. They were written for, and
AVA's must run under, NumPy < 1.24, whose argsort is one scalar introsort for every dtype. NumPy 1.25
and later hand float32/float64 argsorts on x86 to SIMD kernels (x86-simd-sort; with AVX2 since NumPy
2.0), which order ties differently: on our AVX2 machine NumPy 2.4.6 and 1.23.5 sort the same array with
ties differently, and the AVA benchmark's mAP moved by 1.1e-5 (BENCHMARKS.md).

``legacy_argsort`` sorts a copy cast to ``np.longdouble``: NumPy has no SIMD kernel for that dtype, so
the scalar introsort runs, and the cast is exact for float32 and float64 values, so every comparison,
and every tie, is what it was. The result is NumPy 1.23's ``np.argsort`` of the original array, on any
NumPy and any CPU (checked against NumPy 1.23.5 in tests/evaluation/test_tie_order.py's fixture).
"""

from __future__ import annotations

import numpy as np


def legacy_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values)`` (default kind) as NumPy < 1.25 orders it: ``int64 [N]``.

    ``values``: a 1-D float32 or float64 array (scores). Costs a longdouble copy and the scalar sort, about
    as fast as NumPy's old float64 argsort.
    """
    values = np.asarray(values)
    if values.dtype not in (np.float32, np.float64):
        raise TypeError(f"legacy_argsort: expected float32 or float64 scores, got {values.dtype}")
    return np.argsort(values.astype(np.longdouble)).astype(np.int64, copy=False)


__all__ = ["legacy_argsort"]
