"""Count multiply-accumulates and parameters of a model, attention included.

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls and convolutions. Fused attention
kernels hide their matmuls from it, so the forward runs with SDPA forced to the math backend,
whose ``bmm`` calls are counted. GMACs are FLOPs / 2, the unit of fvcore and of the MViTv2 model
zoo (which lists MViTv2-S at 16x224 as 64.5 G / 34.5 M). Norms, softmax and element-wise ops are
not counted (fvcore counts norms too; they are well under 1% here).

The forward runs on the ``meta`` device (a copy of the model, shapes only), so counting a
full-size model takes a fraction of a second and no memory.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class FlopReport:
    """GMACs of one forward pass on an input of ``input_shape``, and the model's parameters."""

    input_shape: tuple[int, ...]
    gmacs: float  # 1e9 multiply-accumulates (= FLOPs / 2) for the whole batch
    params_m: float  # 1e6 parameters (all, trainable or not)
    gmacs_by_op: dict[str, float] = field(default_factory=dict)  # aten op name -> GMACs

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        shape = "x".join(str(s) for s in self.input_shape)
        return f"input {shape}: {self.gmacs:.2f} GMACs, {self.params_m:.2f} M params"


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> FlopReport:
    """Count the MACs of ``model(torch.zeros(input_shape))`` in eval mode, and its parameters.

    Args:
        model: any module taking one tensor; it is not modified (a meta-device copy runs).
        input_shape: full input shape including the batch, e.g. ``(1, 3, 16, 224, 224)``.
    """
    input_shape = tuple(int(s) for s in input_shape)
    params = sum(p.numel() for p in model.parameters())
    meta_model = copy.deepcopy(model).to("meta").eval()
    x = torch.zeros(input_shape, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        meta_model(x)
    by_op = {str(op).split(".")[1] if "." in str(op) else str(op): n / 2e9
             for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return FlopReport(input_shape=input_shape, gmacs=counter.get_total_flops() / 2e9, params_m=params / 1e6,
                      gmacs_by_op=dict(sorted(by_op.items(), key=lambda kv: -kv[1])))
