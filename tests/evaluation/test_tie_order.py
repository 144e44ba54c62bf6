"""``legacy_argsort`` gives NumPy 1.23's ``np.argsort`` order (the official evaluators' NumPy) on any NumPy.

The fixture was written by NumPy 1.23.5 itself (tests/fixtures/make_numpy_argsort_fixture.py). On our AVX2
machine NumPy 2.4.6's plain ``np.argsort`` orders the ties of all 8 of its sorts differently.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from bmvit.evaluation.tie_order import legacy_argsort

FIXTURE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "numpy_1_23_argsort.json").read_text())


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"{c['dtype']}x{len(c['hundredths'])}")
def test_ties_come_out_in_numpy_1_23_order(case):
    assert FIXTURE["numpy"] == "1.23.5"
    values = (np.array(case["hundredths"]) / 100).astype(case["dtype"])
    assert len(np.unique(values)) < len(values)  # ties, or the order would be the same on any sort
    assert legacy_argsort(values).tolist() == case["argsort"]
    assert legacy_argsort(-values).tolist() == case["argsort_negated"]


def test_only_float_scores_are_taken():
    with pytest.raises(TypeError, match="float32 or float64"):
        legacy_argsort(np.array([3, 1, 2]))
