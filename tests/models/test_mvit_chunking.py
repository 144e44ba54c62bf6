"""MViT's chunked attention and MLP on the CPU (a speed change: big blocks stay in the allocator's cache)
must not change a number: chunked and whole computations give the same tokens and gradients."""

from __future__ import annotations

import pytest
import torch

import bmvit
from bmvit.models.backbones import mvit


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
