"""The UNet's conditioning inputs: the lower-half mask and the masked frame (cond_img).

Diff2Lip generates the lower part of a square face crop: rows
``>= first_hidden_row(size, hide)`` = ``int(size * (1 - hide))`` (the official
``face_hide_percentage``, 0.5: the lower half). Training, the training sample grids
and generation build their inputs with these functions:

* ``mask`` float32 ``[B, S, S, 1]``: 1 on hidden rows, 0 above;
* ``cond_img`` ``[B, S, S, 3]``: the frame with its hidden rows replaced by noise,
  ``x * (1 - mask) + mask * noise``;
* :func:`composite`: a generated image's hidden rows over the known frame,
  ``mask * generated + (1 - mask) * known``.

Images are float32 in [-1, 1], NHWC.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

FACE_HIDE_PERCENTAGE = 0.5  # official default: the lower half of the crop is generated

__all__ = [
    "FACE_HIDE_PERCENTAGE",
    "first_hidden_row",
    "lower_half_mask",
    "masked_cond_img",
    "composite",
    "model_inputs",
]


def first_hidden_row(size: int, hide: float = FACE_HIDE_PERCENTAGE) -> int:
    """The first generated row of a crop `size` pixels tall: ``int(size * (1 - hide))`` (64 of 128)."""
    return int(size * (1.0 - hide))


def lower_half_mask(batch: int, size: int, hide: float = FACE_HIDE_PERCENTAGE) -> jax.Array:
    """float32 ``[batch, size, size, 1]``: 1 on rows ``>= first_hidden_row(size, hide)``, else 0."""
    rows = jnp.arange(size) >= first_hidden_row(size, hide)
    return jnp.broadcast_to(rows[None, :, None, None], (batch, size, size, 1)).astype(jnp.float32)


def masked_cond_img(x: jax.Array, mask: jax.Array, noise: jax.Array) -> jax.Array:
    """cond_img ``[B, S, S, C]``: `x` with its masked rows replaced by `noise`, ``x * (1 - mask) + mask * noise``."""
    return x * (1.0 - mask) + mask * noise


def composite(generated: jax.Array, known: jax.Array, mask: jax.Array) -> jax.Array:
    """``mask * generated + (1 - mask) * known``: the generated hidden rows over the known image."""
    return mask * generated + (1.0 - mask) * known


def model_inputs(batch: dict, mask: jax.Array, cond_noise: jax.Array) -> tuple[jax.Array, dict]:
    """Flattens training sequences to frames and builds the UNet's conditioning (official tfg_process_batch).

    batch: ``frames`` [B, F, H, W, 3], ``ref`` [B, H, W, 3] (or [B, R, H, W, 3] for
    nrefer = R > 1, as the data pipeline gives it), ``indiv_mels`` [B, F, 80, 16];
    mask [B*F, H, W, 1]; cond_noise [B*F, H, W, 3].
    Returns x_start [B*F, H, W, 3] and the model kwargs: cond_img (hidden rows replaced
    by `cond_noise`), mask, ref_img [B*F, H, W, 3*R] (the sequence's references, stacked
    on channels in order, for each of its frames), indiv_mels [B*F, 80, 16].
    """
    b, f, h, w, c = batch["frames"].shape
    x = batch["frames"].reshape(b * f, h, w, c)
    ref = batch["ref"]
    if ref.ndim == 5:  # [B, R, H, W, 3] -> [B, H, W, R*3]: reference r on channels 3r..3r+2
        ref = jnp.moveaxis(ref, 1, 3).reshape(b, h, w, -1)
    ref = jnp.repeat(ref, f, axis=0)
    return x, dict(
        cond_img=masked_cond_img(x, mask, cond_noise),
        mask=mask,
        ref_img=ref,
        indiv_mels=batch["indiv_mels"].reshape(b * f, *batch["indiv_mels"].shape[2:]),
    )
