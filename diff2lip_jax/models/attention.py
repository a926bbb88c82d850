"""Softmax attention over [N, T, heads, C] with a hand-written gradient for XLA:CPU.

JAX's own gradient of softmax(q k^T) v makes XLA:CPU (jaxlib 0.10.2) copy the
[N, heads, T, T] probabilities into transposed layouts (for dV = P^T dO) and
run the softmax backward as a reduction of a product of two [N, heads, T, T]
arrays fused with a dot inside YNNPACK, which is slow on this layout: in the
official UNet's training step (5 attention layers at 32x32, T = 1024) this was
~0.3 s. The backward here takes the products it needs in the orientation the
[T, T] matrices are stored in (dV^T = dO^T P, dK^T = Q^T dS), and the
softmax-backward row sums from the small arrays, rowsum(dP * P) =
rowsum(dO * O) (the FlashAttention identity), so no [T, T] array is
transposed or reduced.

`attention` selects this per backend with `lax.platform_dependent`: only CPU
uses it, GPU and TPU keep `reference_attention`, differentiated by JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """q, k, v: [N, T, heads, C] -> [N, T, heads, C]; softmax(q k^T / sqrt(C)) v, softmax in float32."""
    logits = jnp.einsum("nthc,nshc->nhts", q * (q.shape[-1] ** -0.5), k)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("nhts,nshc->nthc", weights, v)


def _heads_first(a: jax.Array) -> jax.Array:
    return jnp.swapaxes(a, 1, 2)  # [N, T, heads, C] <-> [N, heads, T, C]


def _forward(q, k, v):
    """Head-major q (scaled), k, v [N, heads, T, C], probabilities [N, heads, T, T] and the output."""
    qh, kh, vh = _heads_first(q * (q.shape[-1] ** -0.5)), _heads_first(k), _heads_first(v)
    logits = jnp.einsum("nhtc,nhsc->nhts", qh, kh)
    p = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = jnp.einsum("nhts,nhsc->nhtc", p, vh)
    return qh, kh, vh, p, out


@jax.custom_vjp
def _attention(q, k, v):
    return _heads_first(_forward(q, k, v)[-1])


def _attention_fwd(q, k, v):
    qh, kh, vh, p, out = _forward(q, k, v)
    return _heads_first(out), (qh, kh, vh, p, out)


def _attention_bwd(res, d_out):
    qh, kh, vh, p, out = res
    do = _heads_first(d_out)  # [N, heads, T, C]
    dp = jnp.einsum("nhtc,nhsc->nhts", do, vh)
    # rowsum(dP * P) = rowsum(dO * O): a sum over C instead of over the [T, T] product.
    row = jnp.sum(do.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    ds = (p.astype(jnp.float32) * (dp.astype(jnp.float32) - row)).astype(p.dtype)
    dq = jnp.einsum("nhts,nhsc->nhtc", ds, kh) * (qh.shape[-1] ** -0.5)
    dk_t = jnp.einsum("nhtc,nhts->nhcs", qh, ds)  # dK^T = Q^T dS: dS is read as stored
    dv_t = jnp.einsum("nhtc,nhts->nhcs", do, p)  # dV^T = dO^T P
    to_ntc = lambda a_t: jnp.transpose(a_t, (0, 3, 1, 2))  # [N, heads, C, T] -> [N, T, heads, C]
    return _heads_first(dq), to_ntc(dk_t), to_ntc(dv_t)


_attention.defvjp(_attention_fwd, _attention_bwd)


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """q, k, v: [N, T, heads, C] (same dtype) -> [N, T, heads, C]: softmax(q k^T / sqrt(C)) v per head,
    the softmax in float32; on CPU with the gradient above."""
    return lax.platform_dependent(q, k, v, cpu=_attention, default=reference_attention)
