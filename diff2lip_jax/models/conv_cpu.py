"""A drop-in `lax.conv_general_dilated` whose weight gradient is reshaped for XLA:CPU.

XLA computes a convolution's weight gradient dW as another convolution, whose
input-feature dimension is the batch. XLA:CPU's Eigen convolution runs that
slowly when the batch is small: for one 3x3 128->128 conv on a 1x128x128 image
(jaxlib 0.10.2, 2-core AVX-512) dW takes ~80 ms, PyTorch's ~33 ms. On CPU this
module cuts each image into row blocks (each with the halo rows its outputs
read) and stacks them as a larger batch before taking XLA's own dW: the sum
over (batch, rows) is the same sum, and the same dW takes ~33 ms. It is used
only while convolutions run on Eigen, as `diff2lip_jax.xla_flags` sets up for
CPU runs (YNNPACK's convolution, jaxlib's default, is slower on the blocks).

Which dW runs is decided per backend by `lax.platform_dependent`: GPU and TPU
keep XLA's own gradient unchanged, as does any configuration this module does
not handle (dilation, feature/batch groups, non-channels-last layouts,
preferred_element_type, mixed dtypes). The forward pass is XLA's own everywhere;
on CPU, the input gradient dx of a low-resolution conv with a large kernel is a
matmul plus shifted sums (`_dx_by_matmul`), elsewhere it is XLA's own.

`DIFF2LIP_CPU_CONV_VJP=0` (read, like XLA_FLAGS, when a model is traced)
turns the custom gradient off, for A/B timing.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from diff2lip_jax import xla_flags

ENV = "DIFF2LIP_CPU_CONV_VJP"
# The batch the row blocks make up; XLA:CPU's weight gradient is slowest at batch 1
# (it is a convolution with the batch as its input-feature dimension).
BLOCKED_BATCH = 4

# `_dx_by_matmul` replaces XLA's input gradient when the kernel has more than this many
# times the floats of the gradient image (pixels x the wider feature count): at 3x3,
# 8x8 1024->512 (ratio 72) it took 4 ms instead of 13, at 16x16 512->512 (18) 5.3
# instead of 8.6, while at 32x32 512->256 (2.3) it was twice as slow.
DX_MATMUL_RATIO = 6

Padding = tuple[tuple[int, int], ...]


def enabled() -> bool:
    """Whether traced convolutions get the CPU weight gradient: unless DIFF2LIP_CPU_CONV_VJP=0, and
    only while XLA:CPU runs convolutions on Eigen (`xla_flags.CPU_FLAGS`): on YNNPACK's
    convolution the row blocks are slower than XLA's own gradient."""
    if xla_flags.switched_off(os.environ, ENV):
        return False
    return not xla_flags.ynn_runs_convolutions(os.environ.get("XLA_FLAGS", ""))


def _channels_last(nd: int) -> lax.ConvDimensionNumbers:
    """N, spatial..., C / spatial..., I, O / N, spatial..., C (what flax.linen.Conv passes)."""
    lhs = (0, nd + 1, *range(1, nd + 1))
    rhs = (nd + 1, nd, *range(nd))
    return lax.ConvDimensionNumbers(lhs, rhs, lhs)


def _explicit_padding(padding, lhs_shape, rhs_shape, strides) -> Padding | None:
    if isinstance(padding, str):
        try:
            return tuple(lax.padtype_to_pads(lhs_shape[1:-1], rhs_shape[:-2], strides, padding))
        except (TypeError, ValueError):
            return None
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _std_conv(x, w, strides, padding, precision):
    nd = x.ndim - 2
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_channels_last(nd), precision=precision)


def row_blocks(batch: int, out_rows: int) -> int:
    """How many row blocks the CPU weight gradient cuts each image into (1 = none).

    Powers of two until batch x blocks reaches BLOCKED_BATCH, each block keeping
    at least 2 output rows and the rows dividing evenly.
    """
    blocks = 1
    while batch * blocks < BLOCKED_BATCH and out_rows % (2 * blocks) == 0 and out_rows // (2 * blocks) >= 2:
        blocks *= 2
    return blocks


def _dw_blocked(x: jax.Array, g: jax.Array, w: jax.Array, strides, padding: Padding, precision) -> jax.Array:
    """XLA's weight gradient, computed on the images cut into row blocks that form a larger batch.

    x: [N, *spatial, C_in]; g: [N, *out_spatial, C_out]; w: [*kernel, C_in, C_out] (only its
    shape and dtype are used). Block b of an image holds output rows [b*r, (b+1)*r) of g and
    the padded input rows they read, halo included, so summing over the new batch is the
    same sum as over (N, rows): dW is unchanged up to float32 summation order.
    """
    n, out_rows = g.shape[0], g.shape[1]
    blocks = row_blocks(n, out_rows)
    if blocks > 1:
        k, s = w.shape[0], strides[0]
        r = out_rows // blocks
        xp = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)])
        size = (r - 1) * s + k  # padded input rows one block reads
        x = jnp.stack([lax.slice_in_dim(xp, b * r * s, b * r * s + size, axis=1) for b in range(blocks)], axis=1)
        x = x.reshape(n * blocks, *x.shape[2:])
        g = g.reshape(n * blocks, r, *g.shape[2:])
        padding = ((0, 0),) * (x.ndim - 2)
    _, dw_fn = jax.vjp(lambda w_: _std_conv(x, w_, strides, padding, precision), w)
    return dw_fn(g)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, precision):
    return _std_conv(x, w, strides, padding, precision)


def _conv_fwd(x, w, strides, padding, precision):
    return _std_conv(x, w, strides, padding, precision), (x, w)


def _dx_by_matmul(w: jax.Array, g: jax.Array, padding: Padding) -> jax.Array:
    """The input gradient of a stride-1 'same' conv as one matmul and a col2im sum.

    w: [*kernel, C_in, C_out]; g: [N, *spatial, C_out] -> dx [N, *spatial, C_in].
    XLA computes dx as a convolution with the kernel reversed and its two feature
    axes swapped, which XLA:CPU materialises with a slow transpose: at 8x8 with a
    3x3 1024->512 kernel that copy alone costs twice the convolution. Here
    cols = g @ w^T (YNNPACK reads w as stored, [K*C_in, C_out]) gives every tap's
    contribution, and dx sums the shifted taps: dx[p] = sum_t cols[p + pad - t, t].
    """
    kernel, c_in = w.shape[:-2], w.shape[-2]
    nd = len(kernel)
    cols = jnp.einsum("...o,ko->...k", g, w.reshape(-1, w.shape[-1]))
    cols = cols.reshape(*g.shape[:-1], *kernel, c_in)
    cols = jnp.pad(cols, [(0, 0), *padding, *((0, 0),) * (nd + 1)])
    dx = None
    for taps in itertools.product(*(range(k) for k in kernel)):
        index = [slice(None)]
        index += [slice(2 * lo - t, 2 * lo - t + size) for (lo, _), t, size in zip(padding, taps, g.shape[1:-1])]
        term = cols[(*index, *taps)]
        dx = term if dx is None else dx + term
    return dx


def dx_by_matmul_pays(x_shape, w_shape, strides, padding: Padding) -> bool:
    """Whether `_dx_by_matmul` applies (stride 1, odd kernel, 'same' padding) and is faster:
    when the kernel holds far more floats than the gradient it multiplies (low-resolution,
    wide layers; measured on a 2-core AVX-512 Xeon, 3x3 kernels)."""
    kernel = w_shape[:-2]
    same = all(k % 2 == 1 and pad == (k // 2, k // 2) for k, pad in zip(kernel, padding))
    if not same or any(s != 1 for s in strides) or all(k == 1 for k in kernel):
        return False
    pixels = math.prod(x_shape[:-1])
    return math.prod(w_shape) > DX_MATMUL_RATIO * pixels * max(w_shape[-2:])


def _conv_bwd(strides, padding, precision, residuals, g):
    x, w = residuals

    def xla_dx(w, g):
        _, dx_fn = jax.vjp(lambda x_: _std_conv(x_, w, strides, padding, precision), x)
        return dx_fn(g)[0]

    def xla_dw(x, g):
        _, dw_fn = jax.vjp(lambda w_: _std_conv(x, w_, strides, padding, precision), w)
        return dw_fn(g)[0]

    def cpu_dw(x, g):
        return _dw_blocked(x, g, w, strides, padding, precision)

    if precision is None and dx_by_matmul_pays(x.shape, w.shape, strides, padding):
        dx = lax.platform_dependent(w, g, cpu=lambda w, g: _dx_by_matmul(w, g, padding), default=xla_dx)
    else:
        dx = xla_dx(w, g)
    dw = lax.platform_dependent(x, g, cpu=cpu_dw, default=xla_dw)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
    """`lax.conv_general_dilated` with the CPU weight gradient above where it applies.

    lhs: [N, *spatial, C_in]; rhs: [*kernel, C_in, C_out] (channels-last, as
    `flax.linen.Conv` passes them); returns [N, *out_spatial, C_out] in lhs's
    dtype. Same signature and forward values as lax's; any other layout or a
    dilated / grouped convolution is lax's own, gradient included.
    """
    nd = lhs.ndim - 2
    strides = tuple(int(s) for s in window_strides)
    pads = _explicit_padding(padding, lhs.shape, rhs.shape, strides)
    handled = (
        enabled()
        and nd >= 1
        and pads is not None
        and all(d == 1 for d in (lhs_dilation or ()))
        and all(d == 1 for d in (rhs_dilation or ()))
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and lhs.dtype == rhs.dtype
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _channels_last(nd)
    )
    if not handled:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            batch_group_count=batch_group_count,
            precision=precision,
            preferred_element_type=preferred_element_type,
        )
    return _conv(lhs, rhs, strides, pads, precision)
