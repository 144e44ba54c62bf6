"""MViTv2 video backbone (Li et al., "MViTv2: Improved Multiscale Vision Transformers for
Classification and Detection", CVPR 2022), as BMViT uses it (supplementary Fig. 1a).

Adapted from PySlowFast (facebookresearch/SlowFast, slowfast/models/attention.py: attention_pool,
cal_rel_pos_spatial, cal_rel_pos_temporal, MultiScaleAttention, MultiScaleBlock; and
slowfast/models/video_model_builder.py: class MViT) and torchvision (pytorch/vision,
torchvision/models/video/mvit.py). Changes: a typed config that reads like the paper's table,
with the per-block values (dims, heads, strides, token grids, the adaptive KV stride) derived
once in ``__post_init__``; attention through ``scaled_dot_product_attention`` with the decomposed
relative-position term as its additive mask, written once into its padded buffer (on CPU built
and used in query chunks, and the MLP run in token chunks, so that no large temporary is
allocated; on CUDA one SDPA call per block on the memory-efficient kernel: ``ATTENTION_CHUNKING``);
Q and KV pooling as one depthwise ``Conv3d`` call each over all heads, on channels_last views of
the token tensors (no transposed copies); the class token is dropped at the output and the tokens
are returned as ``[B, T', H', W', C]``; pure remap functions for torchvision and PySlowFast
state dicts. Parameter names follow PySlowFast, so its checkpoints load unrenamed.

Token layout everywhere: ``[B, P + T*H*W, C]`` with ``P = 1`` class token first (``P = 0`` when
``cls_embed=False``) and the grid in ``t, h, w`` raster order.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint

from bmvit.models.backbones import register_backbone
from bmvit.models.backbones.layers import (
    DropPath,
    Mlp,
    PatchEmbed3d,
    as_triple,
    conv_output_size,
    init_linear_and_norm,
    interpolate_rel_pos,
    preset_config,
)
from bmvit.models.weights import WeightsFormat

Triple = tuple[int, int, int]

# How a block runs its attention and MLP. "auto": in chunks on CPU (see _CHUNK_BYTES), as one SDPA
# call and one MLP call on any other device; "always" and "never" force one way on every device
# (tests compare the two; they give the same numbers).
ATTENTION_CHUNKING: tuple[str, ...] = ("auto", "always", "never")


def _check_chunking(policy: str) -> str:
    if policy not in ATTENTION_CHUNKING:
        raise ValueError(f"attention_chunking must be one of {ATTENTION_CHUNKING}, got {policy!r}")
    return policy


def uses_chunks(x: Tensor, policy: str = "auto") -> bool:
    """Whether a block splits its attention queries and MLP tokens into chunks for input ``x`` under
    ``policy`` (one of ``ATTENTION_CHUNKING``): ``auto`` chunks on CPU only."""
    if _check_chunking(policy) == "auto":
        return x.device.type == "cpu"
    return policy == "always"


@dataclass(frozen=True)
class BlockSpec:
    """One multiscale block, derived from ``MViTConfig`` (never written by hand)."""

    dim_in: int
    dim_out: int
    attn_dim: int  # channels of q, k, v (dim_out with dim_mul_in_att, else dim_in)
    num_heads: int
    stride_q: Triple
    stride_kv: Triple
    thw_in: Triple  # token grid entering the block
    thw_q: Triple  # grid after Q pooling: the block's output grid
    thw_kv: Triple  # grid of the keys and values after KV pooling
    drop_path: float


@dataclass
class MViTConfig:
    """MViTv2 for video. Defaults are MViTv2-S at 16x224 (PySlowFast ``MVITv2_S_16x4.yaml``).

    Stage ``s`` (0-based) has ``depths[s]`` blocks, ``embed_dim * 2**s`` channels and
    ``num_heads * 2**s`` heads; its first block pools Q with ``stride_q[s]`` and the channel
    and head doubling happens there (in the attention when ``dim_mul_in_att``, else in the MLP
    of the previous stage's last block). Every block pools Q and KV with a depthwise conv of
    ``pool_kernel``. The KV stride follows MViTv2's adaptive rule: it starts at
    ``adaptive_kv_stride`` and is divided (floored at 1) by each Q stride met on the way, so the
    keys keep roughly the same grid through the network. ``stride_kv`` overrides that rule per
    stage: entry ``s`` is None (the rule's stride) or a ``(t, h, w)`` stride for every block of
    stage ``s``. An override touches only its own stage; the rule carries on for the later stages
    as if it were not there, so one stage can be changed without re-deriving the others.
    """

    input_size: Triple = (16, 224, 224)  # (T, H, W) of the clips; relative-position tables are sized for it
    in_chans: int = 3
    depths: tuple[int, ...] = (1, 2, 11, 2)
    embed_dim: int = 96  # channels of the first stage (the output has embed_dim * 2**(stages-1))
    num_heads: int = 1  # heads of the first stage
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    stride_q: tuple[Triple, ...] = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 2, 2))  # at each stage's first block
    adaptive_kv_stride: Triple = (1, 8, 8)
    # One entry per stage, None = the adaptive rule's KV stride. The pooling convs have the same weights
    # whatever their stride, and the rel-pos tables are sized by max(query, key) grid, i.e. by the query
    # grid whenever keys are pooled at least as much as queries, so K400 checkpoints load either way.
    stride_kv: tuple[Triple | None, ...] | None = None
    pool_kernel: Triple = (3, 3, 3)
    patch_kernel: Triple = (3, 7, 7)
    patch_stride: Triple = (2, 4, 4)
    patch_padding: Triple = (1, 3, 3)
    rel_pos_spatial: bool = True
    rel_pos_temporal: bool = True
    residual_pooling: bool = True
    dim_mul_in_att: bool = True
    cls_embed: bool = True
    drop_path_rate: float = 0.0  # linearly increasing over blocks, from 0 at the first
    use_checkpoint: bool = False  # activation checkpointing of every block while training
    norm_eps: float = 1e-6
    attention_chunking: str = "auto"  # one of ATTENTION_CHUNKING

    patch_grid: Triple = field(init=False)
    blocks: tuple[BlockSpec, ...] = field(init=False)
    output_dim: int = field(init=False)
    output_grid: Triple = field(init=False)

    def __post_init__(self) -> None:
        # YAML and JSON give lists; the config is compared and hashed as tuples.
        triples = ("input_size", "adaptive_kv_stride", "pool_kernel", "patch_kernel", "patch_stride", "patch_padding")
        for name in triples:
            setattr(self, name, as_triple(name, getattr(self, name), allow_zero=True))
        self.depths = tuple(int(d) for d in self.depths)
        self.stride_q = tuple(as_triple(f"stride_q[{i}]", s, allow_zero=True) for i, s in enumerate(self.stride_q))
        if self.stride_kv is not None:
            if isinstance(self.stride_kv, (str, bytes)) or not hasattr(self.stride_kv, "__len__"):
                raise ValueError(f"stride_kv must be a list with one entry per stage (null or [t, h, w]), "
                                 f"got {self.stride_kv!r}")
            # A zero stride would be a division by zero in the pooling conv, so unlike stride_q it is refused.
            self.stride_kv = tuple(None if s is None else as_triple(f"stride_kv[{i}]", s)
                                   for i, s in enumerate(self.stride_kv))
        self._validate()
        self.patch_grid = conv_output_size(self.input_size, self.patch_kernel, self.patch_stride, self.patch_padding)
        self.blocks = self._derive_blocks()
        self.output_dim = self.blocks[-1].dim_out
        self.output_grid = self.blocks[-1].thw_q

    def _validate(self) -> None:
        if not self.depths or min(self.depths) < 1:
            raise ValueError(f"depths must be a non-empty tuple of positive block counts, got {self.depths}")
        if len(self.stride_q) != len(self.depths):
            raise ValueError(f"stride_q needs one (t, h, w) stride per stage ({len(self.depths)}), got {self.stride_q}")
        if self.stride_kv is not None and len(self.stride_kv) != len(self.depths):
            raise ValueError(f"stride_kv needs one entry per stage ({len(self.depths)}): null for the adaptive "
                             f"rule or a (t, h, w) stride, got {self.stride_kv}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if any(k % 2 == 0 for k in self.pool_kernel):
            raise ValueError(f"pool_kernel must be odd in every dimension, got {self.pool_kernel}")
        if min(self.input_size) < 1 or not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"bad input_size {self.input_size} or drop_path_rate {self.drop_path_rate}")
        _check_chunking(self.attention_chunking)

    def _derive_blocks(self) -> tuple[BlockSpec, ...]:
        num_stages = len(self.depths)
        dims = [self.embed_dim * 2**s for s in range(num_stages)]
        heads = [self.num_heads * 2**s for s in range(num_stages)]
        total = sum(self.depths)
        pad = tuple(k // 2 for k in self.pool_kernel)
        overrides = self.stride_kv or (None,) * num_stages
        adaptive, thw, specs = self.adaptive_kv_stride, self.patch_grid, []
        for s, depth in enumerate(self.depths):
            for j in range(depth):
                stride_q = self.stride_q[s] if j == 0 else (1, 1, 1)
                # The rule's running stride is updated even where the stage overrides it, so that the
                # stages after an override get exactly the strides they get without one.
                adaptive = tuple(max(kv // q, 1) for kv, q in zip(adaptive, stride_q))
                stride_kv = adaptive if overrides[s] is None else overrides[s]
                if self.dim_mul_in_att:
                    dim_in, dim_out = (dims[s - 1] if j == 0 and s > 0 else dims[s]), dims[s]
                    attn_dim = dim_out
                else:
                    dim_in, dim_out = dims[s], (dims[s + 1] if j == depth - 1 and s < num_stages - 1 else dims[s])
                    attn_dim = dim_in
                thw_q = conv_output_size(thw, self.pool_kernel, stride_q, pad)
                thw_kv = conv_output_size(thw, self.pool_kernel, stride_kv, pad)
                if min(thw_q) < 1 or min(thw_kv) < 1:
                    raise ValueError(f"input_size {self.input_size} is too small: block {len(specs)} has grid {thw}")
                drop_path = self.drop_path_rate * len(specs) / (total - 1) if total > 1 else 0.0
                specs.append(BlockSpec(dim_in, dim_out, attn_dim, heads[s], stride_q, stride_kv, thw, thw_q, thw_kv,
                                       drop_path))
                thw = thw_q
        return tuple(specs)


def _rel_pos_index(q_size: int, k_size: int) -> Tensor:
    """``[q_size, k_size]`` indices into a table of ``2 * max(q_size, k_size) - 1`` offsets.

    When one axis is pooled more than the other, distances are measured on the finer grid (the
    coarser positions scaled up), as in PySlowFast's ``cal_rel_pos_spatial``.
    """
    q_ratio = max(k_size / q_size, 1.0)
    k_ratio = max(q_size / k_size, 1.0)
    dist = torch.arange(q_size)[:, None] * q_ratio - torch.arange(k_size)[None, :] * k_ratio
    return (dist + (k_size - 1) * k_ratio).long()


def _channels_last(tokens: Tensor, thw: Triple) -> Tensor:
    """``tokens [B, T*H*W, C]`` -> ``[B, C, T, H, W]`` in channels_last_3d memory: a free view when
    each sample's tokens are one dense block (batch 1, or no class token), else one copy."""
    grid = tokens.unflatten(1, thw).permute(0, 4, 1, 2, 3)
    if torch.jit.is_tracing():
        # Traced export (ONNX, TorchScript): ONNX has no memory formats and the exporter refuses the hint.
        return grid
    return grid.contiguous(memory_format=torch.channels_last_3d)


def _tokens(grid: Tensor) -> Tensor:
    """``grid [B, C, T, H, W]`` -> ``[B, T*H*W, C]``, a view for a channels_last_3d grid."""
    return grid.permute(0, 2, 3, 4, 1).flatten(1, 3)


def _pool(grid: Tensor, convs: Sequence[nn.Conv3d], num_heads: int) -> Tensor:
    """Depthwise-pool ``grid [B, len(convs) * num_heads * d, T, H, W]`` (channels grouped as
    conv, head, d), each conv's ``d`` filters shared by all heads as in MViTv2.

    One grouped convolution over all heads (and over K and V together) instead of one call
    per head. Returns ``[B, channels, T', H', W']`` (channels_last_3d for such an input).
    """
    weight = torch.cat([conv.weight.repeat(num_heads, 1, 1, 1, 1) for conv in convs])
    conv = convs[0]
    return F.conv3d(grid, weight, None, conv.stride, conv.padding, groups=weight.shape[0])


class _RelPosBias(torch.autograd.Function):
    """``rel_t [B, n, M, kt]`` and ``rel_hw [B, n, M, kh*kw]`` -> the additive attention mask
    ``[B, n, rows + M, cols + kt*kh*kw]``: ``rel_t[q, t] + rel_hw[q, hw]`` for query ``q`` and key
    ``(t, hw)``, zero on the first ``rows`` rows and ``cols`` columns (class-token queries and keys).

    Written by one broadcast add straight into the padded buffer: the mask is the largest tensor
    of the attention, and building it then padding it would write it twice. ``dtype`` (default:
    that of ``rel_t``) is the mask's; with ``align > 1`` the buffer's rows are padded to a multiple
    of ``align`` elements and the mask is a view of their first columns.
    """

    @staticmethod
    def forward(ctx, rel_t: Tensor, rel_hw: Tensor, rows: int, cols: int, dtype: torch.dtype | None = None,
                align: int = 1) -> Tensor:
        batch, heads, num_q, kt = rel_t.shape
        khw = rel_hw.shape[-1]
        width = cols + kt * khw
        padded = -(-width // align) * align
        buffer = rel_t.new_empty(batch, heads, rows + num_q, padded, dtype=dtype or rel_t.dtype)
        if padded > width:
            # Never part of the mask, but a kernel reading whole tiles must not meet NaN garbage.
            buffer[..., width:].zero_()
        mask = buffer[..., :width]
        if rows:
            mask[:, :, :rows].zero_()
        if cols:
            mask[:, :, rows:, :cols].zero_()
        body = mask[:, :, rows:, cols:].unflatten(-1, (kt, khw))
        torch.add(rel_t[..., :, None], rel_hw[..., None, :], out=body)
        ctx.shape = (rows, cols, kt, khw)
        ctx.dtypes = (rel_t.dtype, rel_hw.dtype)
        return mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None, None, None, None]:
        rows, cols, kt, khw = ctx.shape
        body = grad[:, :, rows:, cols:].unflatten(-1, (kt, khw))
        # Summed in the terms' dtype: a bf16 mask's gradient summed over 2k keys in bf16 would lose digits.
        dtype_t, dtype_hw = ctx.dtypes
        return body.sum(-1, dtype=dtype_t), body.sum(-2, dtype=dtype_hw), None, None, None, None


def _rel_pos_bias(rel_t: Tensor, rel_hw: Tensor, rows: int, cols: int, dtype: torch.dtype | None = None,
                  align: int = 1) -> Tensor:
    """``_RelPosBias.apply``, or under a tracer (ONNX, TorchScript export) the same mask built and then
    padded (rows not aligned): tracers record neither an autograd.Function nor its out= write into a
    view of a new tensor."""
    if torch.jit.is_tracing():
        mask = F.pad((rel_t[..., :, None] + rel_hw[..., None, :]).flatten(-2), (cols, 0, rows, 0))
        return mask if dtype is None else mask.to(dtype)
    return _RelPosBias.apply(rel_t, rel_hw, rows, cols, dtype, align)


class _PaddedRelPosBias:
    """``_RelPosBias`` with ``prefix`` zero rows and columns: the mask over all ``P + N`` tokens."""

    @staticmethod
    def apply(rel_t: Tensor, rel_hw: Tensor, prefix: int) -> Tensor:
        return _rel_pos_bias(rel_t, rel_hw, prefix, prefix)


# The relative-position mask has the size of the attention matrix (80 MB in MViTv2-S's second block
# at 16x224) and the first stage's MLP hidden tensor is 40 MB. On CPU, blocks over glibc's 32 MB mmap
# threshold come fresh from the OS at every forward, and faulting their pages in costs about as much
# as filling them (docs/performance.md). Built and used in query (or token) chunks of at most this
# size, they are recycled by the allocator and stay in cache. Splitting queries or tokens is exact.
# CUDA's caching allocator keeps its blocks, so there the chunks would only add kernel launches.
_CHUNK_BYTES = 16 * 2**20

# The memory-efficient SDPA kernel takes an additive mask as it is only when every stride but the
# last is a multiple of 8 elements; otherwise SDPA first copies it into a padded buffer (a second
# mask-sized allocation, forward and backward). The one-call path builds the mask in such a buffer.
_MASK_ALIGN = 8


def _kernel_dtype(q: Tensor) -> torch.dtype:
    """The dtype SDPA will compute ``q``'s attention in: autocast's where it casts ``q``, else ``q``'s."""
    device = q.device.type
    if (q.dtype == torch.float32 and torch.amp.is_autocast_available(device)
            and torch.is_autocast_enabled(device)):
        return torch.get_autocast_dtype(device)
    return q.dtype


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """``scaled_dot_product_attention``; on CUDA pinned to the memory-efficient kernel.

    Flash attention takes no mask and the math kernel materialises the score matrix (several GB
    for MViTv2-S at 16x256 in training), so a silent fallback to it would only show up as a slow
    or out-of-memory run: with only the efficient kernel allowed, SDPA raises instead.
    """
    if not q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        try:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as err:
            raise RuntimeError(_efficient_kernel_refused(q, k, v, mask, err)) from err


def _describe(name: str, t: Tensor | None) -> str:
    if t is None:
        return f"{name} None"
    return f"{name} {tuple(t.shape)} {t.dtype} strides {tuple(t.stride())} offset {t.storage_offset()}"


def _efficient_kernel_refused(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, err: Exception) -> str:
    """The error for a CUDA attention the memory-efficient kernel did not run: the inputs, and torch's
    own reasons when it gives them."""
    dtype = _kernel_dtype(q)
    reasons: list[str] = []
    try:
        cast = [t if t is None or t.dtype == dtype else t.to(dtype) for t in (q, k, v, mask)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            params = torch.backends.cuda.SDPAParams(*cast, 0.0, False, False)
            torch.backends.cuda.can_use_efficient_attention(params, True)
        reasons = [str(w.message) for w in caught]
    except Exception as probe_err:  # the reasons are a courtesy; the error below must still be raised
        reasons = [f"(could not ask torch why: {probe_err})"]
    return (f"MViT attention on CUDA runs only on the memory-efficient SDPA kernel, and it did not run for "
            f"{_describe('q', q)}; {_describe('k', k)}; {_describe('v', v)}; {_describe('mask', mask)}; "
            f"kernel dtype {dtype}. torch says: {'; '.join(reasons) or err}")


class SDPACall(NamedTuple):
    """One attention call seen by ``sdpa_backends``: the backend SDPA selects and its inputs."""

    backend: str  # an SDPBackend name: EFFICIENT_ATTENTION, FLASH_ATTENTION, MATH, ...
    dtype: torch.dtype  # the dtype the kernel computes in (after autocast)
    query: tuple[int, ...]
    key: tuple[int, ...]
    mask: tuple[int, ...] | None
    mask_dtype: torch.dtype | None  # not ``dtype``: autocast copies the mask before the kernel
    mask_stride: tuple[int, ...] | None  # the efficient kernel copies a mask whose row stride is not 8-aligned


class _RecordSDPA(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[SDPACall] = []

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = args[3] if len(args) > 3 else kwargs.get("attn_mask")
            # The choice is made below autocast, on the tensors autocast has cast.
            dtype = _kernel_dtype(q)
            cast = [t if t is None or t.dtype != torch.float32 else t.to(dtype) for t in (q, k, v, mask)]
            choice = torch._fused_sdp_choice(*cast)
            backend = next((b.name for b in SDPBackend.__members__.values() if b.value == choice), str(choice))
            has_mask = mask is not None
            self.calls.append(SDPACall(backend, dtype, tuple(q.shape), tuple(k.shape),
                                       tuple(mask.shape) if has_mask else None, mask.dtype if has_mask else None,
                                       tuple(mask.stride()) if has_mask else None))
        return func(*args, **kwargs)


def sdpa_backends(model: nn.Module, *args: Any, **kwargs: Any) -> list[SDPACall]:
    """Run ``model(*args, **kwargs)`` and report, for each ``scaled_dot_product_attention`` call in it,
    the backend SDPA selects (``torch._fused_sdp_choice``, SDPA's own dispatcher, under the kernel
    settings in force at the call: on CUDA, MViT's pin to the memory-efficient kernel).

    Grad mode and autocast are the caller's: on CPU, for instance, a mask that requires a gradient
    sends SDPA to the math kernel, so a training forward and an inference forward differ.
    """
    recorder = _RecordSDPA()
    with recorder:
        model(*args, **kwargs)
    return recorder.calls


class MultiScaleAttention(nn.Module):
    """Pooling attention with decomposed relative positions and residual pooling.

    ``forward(x [B, P + N_in, dim_in]) -> (x [B, P + N_q, attn_dim], attention or None)``.
    """

    def __init__(self, spec: BlockSpec, cfg: MViTConfig) -> None:
        super().__init__()
        self.num_heads = spec.num_heads
        self.head_dim = spec.attn_dim // spec.num_heads
        self.num_prefix = 1 if cfg.cls_embed else 0
        self.thw_in, self.thw_q, self.thw_kv = spec.thw_in, spec.thw_q, spec.thw_kv
        self.residual_pooling = cfg.residual_pooling
        head_dim, pad = self.head_dim, tuple(k // 2 for k in cfg.pool_kernel)
        self.qkv = nn.Linear(spec.dim_in, 3 * spec.attn_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(spec.attn_dim, spec.attn_dim)
        self.pool_q = nn.Conv3d(head_dim, head_dim, cfg.pool_kernel, spec.stride_q, pad, groups=head_dim, bias=False)
        self.pool_k = nn.Conv3d(head_dim, head_dim, cfg.pool_kernel, spec.stride_kv, pad, groups=head_dim, bias=False)
        self.pool_v = nn.Conv3d(head_dim, head_dim, cfg.pool_kernel, spec.stride_kv, pad, groups=head_dim, bias=False)
        self.norm_q = nn.LayerNorm(head_dim, eps=cfg.norm_eps)
        self.norm_k = nn.LayerNorm(head_dim, eps=cfg.norm_eps)
        self.norm_v = nn.LayerNorm(head_dim, eps=cfg.norm_eps)
        (qt, qh, qw), (kt, kh, kw) = self.thw_q, self.thw_kv
        self.rel_pos_spatial, self.rel_pos_temporal = cfg.rel_pos_spatial, cfg.rel_pos_temporal
        if cfg.rel_pos_spatial:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * max(qh, kh) - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * max(qw, kw) - 1, head_dim))
            self.register_buffer("rel_index_h", _rel_pos_index(qh, kh), persistent=False)
            self.register_buffer("rel_index_w", _rel_pos_index(qw, kw), persistent=False)
        if cfg.rel_pos_temporal:
            self.rel_pos_t = nn.Parameter(torch.zeros(2 * max(qt, kt) - 1, head_dim))
            self.register_buffer("rel_index_t", _rel_pos_index(qt, kt), persistent=False)

    def forward(self, x: Tensor, return_attention: bool = False, chunked: bool | None = None
                ) -> tuple[Tensor, Tensor | None]:
        """``chunked``: split the queries into chunks (``uses_chunks``; None decides from ``x``'s device)."""
        if chunked is None:
            chunked = uses_chunks(x)
        prefix, dim = self.num_prefix, self.num_heads * self.head_dim
        # Q and KV from separate matmuls (rows of the one qkv weight) so that each is a dense
        # [B, N, C] block whose channels_last view the pooling conv reads without a copy.
        weight, bias = self.qkv.weight, self.qkv.bias
        q_all = F.linear(x, weight[:dim], None if bias is None else bias[:dim])
        kv_all = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
        q_tok = _tokens(_pool(_channels_last(q_all[:, prefix:], self.thw_in), (self.pool_q,), self.num_heads))
        kv_tok = _tokens(_pool(_channels_last(kv_all[:, prefix:], self.thw_in), (self.pool_k, self.pool_v),
                               self.num_heads))
        q = self._to_heads(q_all[:, :prefix], q_tok, self.norm_q)
        k = self._to_heads(kv_all[:, :prefix, :dim], kv_tok[..., :dim], self.norm_k)
        v = self._to_heads(kv_all[:, :prefix, dim:], kv_tok[..., dim:], self.norm_v)
        out = self._attend(q, k, v, chunked)
        attention = self._attention_weights(q, k, self._rel_pos_mask(q[:, :, prefix:])) if return_attention else None
        return self.proj(out), attention

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, chunked: bool) -> Tensor:
        """Attention of ``q [B, heads, P + Nq, d]`` over ``k, v [B, heads, P + Nk, d]`` with the
        relative-position bias, plus the residual pooling connection (MViTv2 Sec. 3.2: the pooled
        query is added to the output of every patch query, not of the class token). ``chunked``:
        over query chunks whose mask fits ``_CHUNK_BYTES``; else one SDPA call, its mask in the
        kernel's dtype (autocast would otherwise cast the whole mask) and 8-aligned.

        Returns ``[B, P + Nq, heads * d]``.
        """
        prefix = self.num_prefix
        num_q = q.shape[2] - prefix
        rel = self._rel_pos_terms(q[:, :, prefix:])
        rows = num_q
        if chunked and rel is not None and not (torch.jit.is_tracing() or torch.compiler.is_exporting()):
            # (Exported graphs keep a dynamic batch: chunk sizes must not depend on it.)
            mask_row_bytes = q.shape[0] * q.shape[1] * k.shape[2] * q.element_size()
            rows = max(1, _CHUNK_BYTES // mask_row_bytes)
        dtype, align = (None, 1) if chunked else (_kernel_dtype(q), _MASK_ALIGN)
        sizes = [min(rows, num_q - start) for start in range(0, num_q, rows)]
        rel_chunks = zip(*(r.split(sizes, dim=2) for r in rel)) if rel is not None else [None] * len(sizes)
        # The class-token queries ride in the first chunk, with no bias and no residual.
        q_chunks = q.split([prefix + sizes[0], *sizes[1:]], dim=2)
        parts = []
        for i, (q_c, rel_c) in enumerate(zip(q_chunks, rel_chunks)):
            cls_rows = prefix if i == 0 else 0
            mask = None
            if rel_c is not None:
                rel_t, rel_h, rel_w = rel_c
                rel_hw = (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
                mask = _rel_pos_bias(rel_t, rel_hw, cls_rows, prefix, dtype, align)
            out = _sdpa(q_c, k, v, mask)
            if self.residual_pooling:
                residual = out + q_c
                if cls_rows:
                    residual[:, :, :cls_rows] = out[:, :, :cls_rows]
                out = residual
            parts.append(out.transpose(1, 2))
        # q, k, v live in [B, L, heads, d] memory, and so does SDPA's output: one chunk is a view.
        return (parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)).flatten(2)

    def _to_heads(self, cls: Tensor, tokens: Tensor, norm: nn.LayerNorm) -> Tensor:
        """``cls [B, P, heads * d]`` and pooled ``tokens [B, N, heads * d]`` -> normed
        ``[B, heads, P + N, d]`` (a transposed view of ``[B, P + N, heads, d]`` memory)."""
        if self.num_prefix:
            tokens = torch.cat([cls, tokens], dim=1)
        return norm(tokens.unflatten(-1, (self.num_heads, self.head_dim))).transpose(1, 2)

    def _rel_pos_terms(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
        """Decomposed relative-position terms for patch queries ``q [B, heads, Nq, d]`` (unscaled):
        ``(rel_t [B, heads, Nq, kt], rel_h [.., kh], rel_w [.., kw])`` with ``rel_h[q, kh] = q . R_h[qh, kh]``
        and so on, zeros for a switched-off part; None when both parts are off. The bias of query
        ``q`` on key ``(kt, kh, kw)`` is ``rel_t[q, kt] + rel_h[q, kh] + rel_w[q, kw]``.
        """
        if not (self.rel_pos_spatial or self.rel_pos_temporal):
            return None
        (qt, qh, qw), (kt, kh, kw) = self.thw_q, self.thw_kv
        batch, heads, num_q = q.shape[:3]
        r_q = q.unflatten(2, (qt, qh, qw))

        def rel(spec: str, table: Tensor, index: Tensor) -> Tensor:
            # flatten, not reshape(batch, ...): a traced graph would keep the example's batch size.
            return torch.einsum(spec, r_q, table[index]).flatten(2, 4)

        if self.rel_pos_spatial:
            rel_h = rel("bnthwc,hkc->bnthwk", self.rel_pos_h, self.rel_index_h)
            rel_w = rel("bnthwc,wkc->bnthwk", self.rel_pos_w, self.rel_index_w)
        else:
            rel_h, rel_w = q.new_zeros(batch, heads, num_q, kh), q.new_zeros(batch, heads, num_q, kw)
        if self.rel_pos_temporal:
            rel_t = rel("bnthwc,tkc->bnthwk", self.rel_pos_t, self.rel_index_t)
        else:
            rel_t = q.new_zeros(batch, heads, num_q, kt)
        return rel_t, rel_h, rel_w

    def _rel_pos_mask(self, q: Tensor) -> Tensor | None:
        """The whole additive mask ``[B, heads, P + Nq, P + Nk]`` for patch queries ``q [B, heads, Nq, d]``
        (zero on the class-token row and column), or None without relative positions."""
        rel = self._rel_pos_terms(q)
        if rel is None:
            return None
        rel_t, rel_h, rel_w = rel
        return _PaddedRelPosBias.apply(rel_t, (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2), self.num_prefix)

    def _attention_weights(self, q: Tensor, k: Tensor, mask: Tensor | None) -> Tensor:
        """The softmax SDPA computes, made explicit (SDPA does not return it), over patch tokens:
        ``[B, heads, Tq, Hq, Wq, Tk, Hk, Wk]``, class-token row and column dropped (rows then sum
        to 1 minus the weight on the class token)."""
        scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        p = self.num_prefix
        weights = scores.softmax(dim=-1)[:, :, p:, p:]
        return weights.reshape(*weights.shape[:2], *self.thw_q, *self.thw_kv)


class MultiScaleBlock(nn.Module):
    """``x [B, P + N_in, dim_in] -> (x [B, P + N_q, dim_out], attention or None)``."""

    def __init__(self, spec: BlockSpec, cfg: MViTConfig) -> None:
        super().__init__()
        self.spec = spec
        self.dim_mul_in_att = cfg.dim_mul_in_att
        self.num_prefix = 1 if cfg.cls_embed else 0
        self.attention_chunking = cfg.attention_chunking
        self.norm1 = nn.LayerNorm(spec.dim_in, eps=cfg.norm_eps)
        self.attn = MultiScaleAttention(spec, cfg)
        self.drop_path = DropPath(spec.drop_path) if spec.drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(spec.attn_dim, eps=cfg.norm_eps)
        self.mlp = Mlp(spec.attn_dim, int(spec.attn_dim * cfg.mlp_ratio), spec.dim_out)
        self.proj = nn.Linear(spec.dim_in, spec.dim_out) if spec.dim_in != spec.dim_out else None
        self.pool_skip = None
        if any(s > 1 for s in spec.stride_q):
            kernel = tuple(s + 1 if s > 1 else s for s in spec.stride_q)
            self.pool_skip = nn.MaxPool3d(kernel, spec.stride_q, tuple(k // 2 for k in kernel))

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        chunked = uses_chunks(x, self.attention_chunking)
        x_norm = self.norm1(x)
        x_attn, attention = self.attn(x_norm, return_attention, chunked)
        if self.proj is not None and self.dim_mul_in_att:
            x = self.proj(x_norm)
        if self.pool_skip is not None:
            x = self._pool_skip(x)
        x = x + self.drop_path(x_attn)
        x_norm = self.norm2(x)
        x_mlp = self._mlp(x_norm, chunked)
        if self.proj is not None and not self.dim_mul_in_att:
            x = self.proj(x_norm)
        return x + self.drop_path(x_mlp), attention

    def _mlp(self, x: Tensor, chunked: bool) -> Tensor:
        """The MLP, ``chunked`` over token chunks whose hidden activations fit in ``_CHUNK_BYTES``."""
        if not chunked or torch.jit.is_tracing() or torch.compiler.is_exporting():
            # (Exported graphs keep a dynamic batch: chunk sizes must not depend on it.)
            return self.mlp(x)
        batch, num_tokens = x.shape[:2]
        rows = max(1, _CHUNK_BYTES // (batch * self.mlp.fc1.out_features * x.element_size()))
        if rows >= num_tokens:
            return self.mlp(x)
        return torch.cat([self.mlp(chunk) for chunk in x.split(rows, dim=1)], dim=1)

    def _pool_skip(self, x: Tensor) -> Tensor:
        """Max-pool the residual to the pooled query grid; the class token passes unpooled."""
        p = self.num_prefix
        pooled = _tokens(self.pool_skip(_channels_last(x[:, p:], self.spec.thw_in)))
        return torch.cat([x[:, :p], pooled], dim=1) if p else pooled


class MViT(nn.Module):
    """MViTv2 video backbone.

    ``forward(x [B, 3, T, H, W]) -> tokens [B, T', H', W', C]`` after the final norm, class token
    dropped; ``x`` must have exactly the ``input_size`` the model was built for (the
    relative-position tables are sized for it). ``embed_dim`` is ``C`` of the output.
    """

    weights_formats: ClassVar[dict[str, WeightsFormat]]  # filled below, after the remap functions

    def __init__(self, cfg: MViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.output_dim
        self.input_size = cfg.input_size
        self.output_grid = cfg.output_grid
        self.num_prefix = 1 if cfg.cls_embed else 0
        self.patch_embed = PatchEmbed3d(cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride,
                                        cfg.patch_padding)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.cls_embed else None
        self.blocks = nn.ModuleList(MultiScaleBlock(spec, cfg) for spec in cfg.blocks)
        self.norm = nn.LayerNorm(cfg.output_dim, eps=cfg.norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        init_linear_and_norm(self)
        for name, param in self.named_parameters():
            if name == "cls_token" or ".rel_pos_" in name:
                nn.init.trunc_normal_(param, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Full names of the parameters trained without weight decay: class token and rel-pos tables."""
        return {name for name, _ in self.named_parameters() if name == "cls_token" or ".rel_pos_" in name}

    def set_attention_chunking(self, policy: str) -> None:
        """Switch every block to ``policy`` (one of ``ATTENTION_CHUNKING``); the weights are untouched."""
        self.cfg.attention_chunking = _check_chunking(policy)
        for block in self.blocks:
            block.attention_chunking = policy

    def forward(self, x: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Args:
            x: ``[B, 3, T, H, W]`` float clip, normalised, ``(T, H, W) == self.input_size``.
            return_attention: also return the last block's attention weights over patch tokens,
                ``[B, heads, T', H', W', Tk, Hk, Wk]`` (queries on the output grid, keys on the
                last block's pooled KV grid; class-token row and column dropped).

        Returns:
            ``tokens [B, T', H', W', C]``, or ``(tokens, attention)`` when ``return_attention``.
        """
        self._check_input(x)
        tokens, _ = self.patch_embed(x)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        attention = None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            want = return_attention and i == last
            if self.cfg.use_checkpoint and self.training and torch.is_grad_enabled():
                tokens, attention = checkpoint(block, tokens, want, use_reentrant=False)
            else:
                tokens, attention = block(tokens, want)
        tokens = self.norm(tokens)[:, self.num_prefix :]
        tokens = tokens.reshape(tokens.shape[0], *self.output_grid, self.embed_dim)
        return (tokens, attention) if return_attention else tokens

    def _check_input(self, x: Tensor) -> None:
        t, h, w = self.input_size
        expected = f"[B, {self.cfg.in_chans}, {t}, {h}, {w}]"
        if not isinstance(x, Tensor) or x.ndim != 5:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"MViT expects a clip shaped {expected} (batch, channels, frames, height, width), "
                             f"got {got}")
        if x.shape[1] != self.cfg.in_chans:
            raise ValueError(f"MViT expects {self.cfg.in_chans} channels, {expected}; got {tuple(x.shape)} "
                             f"(a [B, T, C, H, W] clip must be permuted to [B, C, T, H, W])")
        if x.shape[2] != t:
            shorter = "fewer frames than" if x.shape[2] < t else "more frames than"
            raise ValueError(f"clip has {x.shape[2]} frames, {shorter} the {t} this model was built for; expected "
                             f"{expected}, got {tuple(x.shape)}")
        if tuple(x.shape[3:]) != (h, w):
            raise ValueError(f"clip is {x.shape[3]}x{x.shape[4]} pixels but this model was built for {h}x{w} "
                             f"(build it with input_size=({t}, {x.shape[3]}, {x.shape[4]}) to change it); "
                             f"expected {expected}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"MViT expects a float clip, got dtype {x.dtype}")


# ---------------------------------------------------------------------------------------------
# Pretrained weights: one pure remap per source format, each returning a state dict in our names.

# torchvision key -> our key; a key no rule matches passes through unchanged, so the strict
# loader reports it (e.g. MViTv1's absolute position embeddings: another architecture).
_TORCHVISION_RULES: tuple[tuple[str, str], ...] = (
    (r"conv_proj\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"pos_encoding\.class_token", r"cls_token"),
    (r"blocks\.(\d+)\.attn\.project\.0\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"blocks\.(\d+)\.attn\.pool_([qkv])\.pool\.weight", r"blocks.\1.attn.pool_\2.weight"),
    (r"blocks\.(\d+)\.attn\.pool_([qkv])\.norm_act\.0\.(weight|bias)", r"blocks.\1.attn.norm_\2.\3"),
    (r"blocks\.(\d+)\.mlp\.0\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"blocks\.(\d+)\.mlp\.3\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"blocks\.(\d+)\.project\.(weight|bias)", r"blocks.\1.proj.\2"),
)


def remap_torchvision(state_dict: dict[str, Tensor], model: MViT) -> dict[str, Tensor]:
    """torchvision ``MViT`` (e.g. ``mvit_v2_s`` Kinetics-400) state dict -> ours.

    Renames (``conv_proj`` -> ``patch_embed.proj``, ``attn.project.0`` -> ``attn.proj``,
    ``pool_q.pool``/``pool_q.norm_act.0`` -> ``pool_q``/``norm_q``, ``mlp.0``/``mlp.3`` ->
    ``mlp.fc1``/``mlp.fc2``, ``project`` -> ``proj``), reshapes the class token to ``[1, 1, C]``
    and resizes relative-position tables to the model's input size. The classifier ``head.*``
    passes through for the loader to drop and report.
    """
    out = {}
    for key, value in state_dict.items():
        new_key = key
        for pattern, replacement in _TORCHVISION_RULES:
            if re.fullmatch(pattern, key):
                new_key = re.sub(pattern, replacement, key)
                break
        out[new_key] = value.reshape(1, 1, -1) if new_key == "cls_token" else value
    return _fit_rel_pos(out, model)


def remap_slowfast(state_dict: dict[str, Tensor], model: MViT) -> dict[str, Tensor]:
    """PySlowFast ``MViT`` state dict (the ``model_state`` of e.g. ``MViTv2_S_16x4_k400_f302660347.pyth``)
    -> ours. The names are the same; relative-position tables are resized to the model's input
    size and the classifier ``head.projection.*`` passes through for the loader to drop and report."""
    return _fit_rel_pos(dict(state_dict), model)


def remap_bmvit(state_dict: dict[str, Tensor], model: MViT) -> dict[str, Tensor]:
    """Our own MViT state dict -> ours, relative-position tables resized to the model's input size."""
    return _fit_rel_pos(dict(state_dict), model)


def _fit_rel_pos(state_dict: dict[str, Tensor], model: MViT) -> dict[str, Tensor]:
    """Linearly resize every ``*.rel_pos_{h,w,t}`` table whose length differs from the model's
    (e.g. a 224-px checkpoint into a 256-px model). Other shape differences are left for the
    loader to report."""
    targets = {name: p.shape for name, p in model.named_parameters() if ".rel_pos_" in name}
    for key, table in state_dict.items():
        shape = targets.get(key)
        if shape is not None and table.ndim == 2 and table.shape[1] == shape[1] and table.shape[0] != shape[0]:
            state_dict[key] = interpolate_rel_pos(table, shape[0])
    return state_dict


def _looks_torchvision(keys: Collection[str]) -> bool:
    return "conv_proj.weight" in keys and "pos_encoding.class_token" in keys


def _looks_slowfast(keys: Collection[str]) -> bool:
    return "patch_embed.proj.weight" in keys and "head.projection.weight" in keys


def _looks_bmvit(keys: Collection[str]) -> bool:
    return "patch_embed.proj.weight" in keys and "blocks.0.attn.qkv.weight" in keys


MViT.weights_formats = {
    "torchvision": WeightsFormat("torchvision", remap_torchvision, _looks_torchvision,
                                 drop=(r"head\.1\.(weight|bias)",)),
    "slowfast": WeightsFormat("slowfast", remap_slowfast, _looks_slowfast, drop=(r"head\.projection\.(weight|bias)",)),
    "bmvit": WeightsFormat("bmvit", remap_bmvit, _looks_bmvit),
}


# ---------------------------------------------------------------------------------------------
# Presets. Every MViTConfig field can be overridden: create_backbone("mvitv2_s", drop_path_rate=0.2).


def _create(defaults: dict, overrides: dict) -> MViT:
    return MViT(preset_config(MViTConfig, "MViT", defaults, overrides))


@register_backbone
def mvitv2_s(**overrides) -> MViT:
    """MViTv2-S in its Kinetics geometry: 16x224, 1/2/11/2 blocks, 96 -> 768 channels, Q pooled at
    the first block of stages 2, 3 and 4; tokens out 768 x 8 x 7 x 7. 34.2 M parameters."""
    return _create({}, overrides)


@register_backbone
def mvitv2_s_det(**overrides) -> MViT:
    """MViTv2-S as BMViT uses it: 16x256 input and the Q pooling at the start of scale5 removed,
    so the output keeps scale4's grid: 768 x 8 x 16 x 16 (256 candidates per time slice).

    The channel and head doubling at scale5 are kept (docs/design.md#backbone). The paper does not say what
    happens to scale5's KV stride; we keep MViTv2's adaptive rule, which, with no Q stride to
    divide by, leaves it at (1, 2, 2) (keys on an 8x8x8 grid) rather than (1, 1, 1). This is
    the cheaper choice (about 110 GMACs instead of 120, docs/design.md#backbone) and every K400 weight still
    applies. The supplementary's Fig. 3 (attention over "the whole 8x16x16" tokens) hints at KV
    stride 1 instead; ``stride_kv=[None, None, None, (1, 1, 1)]`` builds it (about 120 GMACs,
    configs/ablations/scale5_kv_full.yaml).
    """
    return _create({"input_size": (16, 256, 256), "stride_q": ((1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 1, 1))}, overrides)


_TINY = {"input_size": (16, 128, 128), "depths": (1, 1, 2, 1), "embed_dim": 24, "num_heads": 1}


@register_backbone
def mvit_tiny(**overrides) -> MViT:
    """A 5-block MViTv2 (24 -> 192 channels) at 16x128 for tests and CPU demos; every pooling kept,
    tokens out 192 x 8 x 4 x 4."""
    return _create(dict(_TINY), overrides)


@register_backbone
def mvit_tiny_det(**overrides) -> MViT:
    """``mvit_tiny`` with BMViT's change (no Q pooling at the last stage): tokens out 192 x 8 x 8 x 8."""
    return _create({**_TINY, "stride_q": ((1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 1, 1))}, overrides)
