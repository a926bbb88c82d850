"""Value-range conversions between uint8 pixels [0, 255] and model images in [-1, 1].

One home for the conversions train, generate and evaluate use. Each function takes
a numpy array (or anything ``np.asarray`` accepts) and returns numpy, or takes a
jax array / tracer and returns jax (usable under ``jax.jit``). The names say how a
float becomes a byte:

* :func:`unit_to_uint8_truncate`: ``uint8(clip((x + 1) / 2, 0, 1) * 255)``,
  truncating, as the official generate's ``(normalise(x) * 255).astype(uint8)``.
  Generation uses it (its output is verified frame for frame against the official
  code): 1 -> 255, 0 -> 127, -1 -> 0.
* :func:`unit_to_uint8_round`: ``uint8(clip((x + 1) * 127.5 + 0.5, 0, 255))``,
  rounding half up (nearest grey level): the training sample grids. 0 -> 128.
* :func:`uint8_to_unit`: ``x / 127.5 - 1`` as float32, 0 -> -1, 255 -> 1.

This module imports no jax itself: a jax input implies jax is already loaded.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["uint8_to_unit", "unit_to_uint8_round", "unit_to_uint8_truncate"]


def _is_jax(x: Any) -> bool:
    """True for a jax array or tracer (without importing jax when it is not loaded)."""
    jax = sys.modules.get("jax")
    return jax is not None and isinstance(x, jax.Array)


def uint8_to_unit(images: Any) -> Any:
    """uint8 ``[...]`` in [0, 255] -> float32 ``[...]`` in [-1, 1]: ``x / 127.5 - 1``.

    numpy input (the data pipelines): ``x * float32(1 / 127.5) - 1`` in float32.
    jax input (generation, the LSE scorers, under jit): ``x / 255 * 2 - 1``, the
    official ``normalise2(x / 255)``; XLA folds the constants, and on CPU the result
    equals ``x / 127.5 - 1`` under jit for every uint8 value (tests/test_images.py).
    The numpy and jitted results can differ in the last bit (float32 ulp) for some
    values; each caller keeps the form it always had.
    """
    if _is_jax(images):
        import jax.numpy as jnp

        return images.astype(jnp.float32) / 255.0 * 2.0 - 1.0
    return np.asarray(images, np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


def unit_to_uint8_truncate(x: Any) -> Any:
    """float ``[...]`` in [-1, 1] -> uint8 ``[...]``, truncating: ``uint8(clip((x + 1) * 0.5, 0, 1) * 255)``.

    The official generate's conversion. Values outside [-1, 1] are clipped. Exact
    grey levels ``k / 127.5 - 1`` can come back one level lower (float rounding
    below ``k``); generation keeps the known upper half as the input bytes for that.
    """
    if _is_jax(x):
        import jax.numpy as jnp

        return (jnp.clip((x + 1.0) * 0.5, 0.0, 1.0) * 255.0).astype(jnp.uint8)
    x = np.asarray(x, np.float32)
    return (np.clip((x + np.float32(1.0)) * np.float32(0.5), 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def unit_to_uint8_round(images: Any) -> Any:
    """float ``[...]`` in [-1, 1] -> uint8 ``[...]``, rounding half up: ``uint8(clip((x + 1) * 127.5 + 0.5, 0, 255))``.

    Computed in float32; values outside [-1, 1] are clipped. Used for the training
    sample grids.
    """
    if _is_jax(images):
        import jax.numpy as jnp

        x = images.astype(jnp.float32)
        return jnp.clip((x + 1.0) * 127.5 + 0.5, 0, 255).astype(jnp.uint8)
    return np.clip((np.asarray(images, np.float32) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
