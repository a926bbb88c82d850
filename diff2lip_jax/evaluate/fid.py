"""The FID Inception-v3 (pytorch-fid's network) in Flax, NHWC, and pool3 feature extraction.

The network is torchvision's ``inception_v3`` with pytorch-fid's changes for FID
(the TensorFlow graph the original FID used): the average pools inside the A, C
and E blocks do not count the zero padding (``count_include_pad=False``), and the
last E block (Mixed_7c) max-pools its pool branch. ``BasicConv2d`` is a bias-free
convolution, BatchNorm in inference mode (eps 1e-3) and ReLU. Features are the
2048-d global average pool after Mixed_7c ("pool3"); the 1008-way ``fc`` of the
weights file is not used.

Inputs follow pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``:
RGB in [0, 1] resized to 299x299 bilinearly (``F.interpolate(...,
align_corners=False)``, no antialiasing: ``jax.image.resize`` "linear" with
``antialias=False`` samples the same points with the same edge clamping), then
scaled to [-1, 1].

Weights: the released ``pt_inception-2015-12-05-6726825d.pth`` (a torch state_dict
with torchvision's key names, e.g. ``Mixed_5b.branch1x1.conv.weight``); loaded
with conv kernels OIHW -> HWIO and BatchNorm weight/bias/running stats. Submodules
carry the torchvision names, so the key list is generated from this module
(:func:`state_dict_shapes`). Nothing is downloaded here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from diff2lip_jax.torch_io import (
    check_state_dict,
    kernel_shape_to_torch,
    kernel_to_flax,
    load_state_dict_file,
    strip_prefixes,
)

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_FILE}"
FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3  # torchvision BasicConv2d
NUM_CLASSES = 1008  # the fc of the FID weights (unused, accepted in the file)

_Pad = int | tuple[int, int]


def _pad(p: _Pad) -> list[tuple[int, int]]:
    ph, pw = (p, p) if isinstance(p, int) else p
    return [(ph, ph), (pw, pw)]


class BasicConv2d(nn.Module):
    """torchvision ``BasicConv2d``: conv (no bias) -> BatchNorm(eps=1e-3, running stats) -> ReLU."""

    features: int
    kernel: _Pad
    stride: int = 1
    padding: _Pad = 0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = (self.kernel, self.kernel) if isinstance(self.kernel, int) else tuple(self.kernel)
        x = nn.Conv(
            self.features,
            k,
            strides=(self.stride, self.stride),
            padding=_pad(self.padding),
            use_bias=False,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    # pytorch-fid: TensorFlow's average pool ignores the padded zeros.
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d (FIDInceptionA): 64 + 64 + 96 + pool_features channels."""

    pool_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(64, 1, name="branch1x1")(x)
        b5 = BasicConv2d(64, 5, padding=2, name="branch5x5_2")(BasicConv2d(48, 1, name="branch5x5_1")(x))
        b3 = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv2d(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """Mixed_6a: 35x35 -> 17x17, 384 + 96 + in channels."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(384, 3, stride=2, name="branch3x3")(x)
        bd = BasicConv2d(64, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv2d(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (FIDInceptionC): factorised 7x7 convolutions, 4 x 192 channels."""

    channels_7x7: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c7 = self.channels_7x7
        b1 = BasicConv2d(192, 1, name="branch1x1")(x)
        b7 = BasicConv2d(c7, 1, name="branch7x7_1")(x)
        b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        bd = BasicConv2d(c7, 1, name="branch7x7dbl_1")(x)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
        bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
        bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
        bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
        bp = BasicConv2d(192, 1, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """Mixed_7a: 17x17 -> 8x8, 320 + 192 + in channels."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b3 = BasicConv2d(320, 3, stride=2, name="branch3x3_2")(BasicConv2d(192, 1, name="branch3x3_1")(x))
        b7 = BasicConv2d(192, 1, name="branch7x7x3_1")(x)
        b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv2d(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """Mixed_7b (avg-pool branch, FIDInceptionE_1) and Mixed_7c (max-pool branch, FIDInceptionE_2)."""

    max_pool: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b1 = BasicConv2d(320, 1, name="branch1x1")(x)
        b3 = BasicConv2d(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = BasicConv2d(448, 1, name="branch3x3dbl_1")(x)
        bd = BasicConv2d(384, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        if self.max_pool:  # pytorch-fid: the FID graph max-pools here (Mixed_7c)
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        else:
            pooled = _avg_pool_3x3(x)
        bp = BasicConv2d(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's ``InceptionV3`` up to the pool3 features.

    Call ``(x) -> [B, 2048]`` float32 with ``x`` float ``[B, 299, 299, 3]`` RGB in
    [-1, 1] (see :func:`preprocess`). Variables: {"params", "batch_stats"}.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = BasicConv2d(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv2d(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv2d(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)
        x = BasicConv2d(80, 1, name="Conv2d_3b_1x1")(x)
        x = BasicConv2d(192, 3, name="Conv2d_4a_3x3")(x)
        x = _max_pool_3x3_s2(x)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, name=name)(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def preprocess(images: jax.Array) -> jax.Array:
    """uint8 (or float in [0, 255]) RGB ``[B, H, W, 3]`` -> float32 ``[B, 299, 299, 3]`` in [-1, 1]."""
    x = images.astype(jnp.float32) / 255.0
    if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
        x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, x.shape[3]), "linear", antialias=False)
    return 2.0 * x - 1.0


# ---------------------------------------------------------------- weights


def _torch_layout(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Flax HWIO kernel shape -> torch OIHW (other leaves keep their shape)."""
    return kernel_shape_to_torch(shape) if len(shape) == 4 else shape


@functools.lru_cache(maxsize=1)
def _flat_variables() -> dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """torch key -> (collection, flax path, flax shape), in torch state_dict order.

    The BasicConv2d modules are recorded in call order while tracing ``init`` (no
    arrays are computed): forward order is torchvision's definition order, whereas
    jax pytrees sort dict keys, so the variables alone would not give it.
    """
    paths: list[tuple[str, ...]] = []

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, BasicConv2d) and context.method_name == "__call__":
            paths.append(tuple(context.module.path))
        return next_fun(*args, **kwargs)

    x = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    with nn.intercept_methods(record):
        shapes = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), x)
    out: dict[str, tuple[str, tuple[str, ...], tuple[int, ...]]] = {}
    for path in paths:
        prefix = ".".join(path)
        for collection, sub, leaf, torch_leaf in (
            ("params", "conv", "kernel", "conv.weight"),
            ("params", "bn", "scale", "bn.weight"),
            ("params", "bn", "bias", "bn.bias"),
            ("batch_stats", "bn", "mean", "bn.running_mean"),
            ("batch_stats", "bn", "var", "bn.running_var"),
        ):
            node = shapes[collection]
            for name in (*path, sub):
                node = node[name]
            out[f"{prefix}.{torch_leaf}"] = (collection, (*path, sub, leaf), tuple(node[leaf].shape))
    return out


def state_dict_shapes(include_fc: bool = True) -> dict[str, tuple[int, ...]]:
    """Every tensor key of the FID weights file -> its torch shape (OIHW convs).

    Generated from :class:`FIDInceptionV3`; ``include_fc`` adds the unused 1008-way
    ``fc.weight``/``fc.bias`` that the released file also holds.
    """
    shapes = {k: _torch_layout(shape) for k, (_, _, shape) in _flat_variables().items()}
    if include_fc:
        shapes.update({"fc.weight": (NUM_CLASSES, FEATURE_DIM), "fc.bias": (NUM_CLASSES,)})
    return shapes


def variables_from_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """FID Inception state_dict (numpy or torch values) -> {"params", "batch_stats"}.

    Keys may carry a "module." prefix; ``fc.*`` and ``num_batches_tracked`` entries
    are accepted and ignored. Any other missing or unexpected key, or a wrong
    shape, raises ValueError naming it.
    """
    expected = _flat_variables()
    sd = check_state_dict(
        strip_prefixes(state_dict, ("module.",)),
        {key: _torch_layout(shape) for key, (_, _, shape) in expected.items()},
        what=f"not an FID Inception-v3 state_dict ({FID_WEIGHTS_FILE})",
        ignore=("fc.weight", "fc.bias", "*num_batches_tracked"),
        show=4,
    )
    variables: dict[str, Any] = {"params": {}, "batch_stats": {}}
    for key, (collection, path, _) in expected.items():
        node = variables[collection]
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = kernel_to_flax(sd[key]) if path[-1] == "kernel" else sd[key]
    return variables


def load_inception(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Variables of :class:`FIDInceptionV3` from a local copy of the FID weights file.

    Read with ``torch.load(weights_only=True)`` (or safetensors); nothing is downloaded.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--inception_weights={path}: no such file; download {FID_WEIGHTS_URL}")
    return variables_from_state_dict(load_state_dict_file(path))


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """A state_dict with the FID file's keys and shapes and random values (tests, ``--fid_weights=random``).

    Convs are He-normal (so activations keep their scale through ~100 layers),
    BatchNorm is near identity with positive running variances.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for key, shape in state_dict_shapes().items():
        if len(shape) == 4:
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        elif key.endswith("running_var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif key.endswith("weight") and not key.startswith("fc."):
            value = rng.uniform(0.8, 1.2, shape)
        else:
            value = rng.standard_normal(shape) * 0.05
        out[key] = value.astype(np.float32)
    return out


class InceptionFeatures:
    """Batched, jitted pool3 features: uint8 RGB ``[N, H, W, 3]`` -> float64 ``[N, 2048]``.

    Frames go through in fixed batches of ``batch_size`` (the last one padded), so
    XLA compiles once per input size.
    """

    def __init__(self, variables: Mapping[str, Any], batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.variables = jax.tree.map(jnp.asarray, dict(variables))
        self.batch_size = int(batch_size)
        module = FIDInceptionV3()
        self._forward = jax.jit(lambda v, x: module.apply(v, preprocess(x)))

    @classmethod
    def from_weights(cls, weights: str, batch_size: int = 16) -> InceptionFeatures:
        """``weights``: a path to the FID weights file, or "random" (tests only: meaningless features)."""
        if weights == "random":
            return cls(variables_from_state_dict(random_state_dict()), batch_size)
        return cls(load_inception(weights), batch_size)

    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W, 3] RGB, got shape {images.shape}")
        n, b = len(images), self.batch_size
        out = np.empty((n, FEATURE_DIM), np.float64)
        for start in range(0, n, b):
            chunk = images[start : start + b]
            pad = b - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            feats = np.asarray(self._forward(self.variables, jnp.asarray(chunk)))
            out[start : start + b] = feats[: b - pad]
        return out
