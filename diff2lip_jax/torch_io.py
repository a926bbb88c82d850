"""PyTorch weights in and out: state_dict files and the generic half of every torch <-> Flax converter.

A leaf module (stdlib and numpy only; torch and safetensors are imported inside
the functions that read or write files), so any model module may import it at
module level. Each converter (`convert` for the UNet, `models.syncnet`,
`evaluate.fid`, `evaluate.syncnet_python`, `face.s3fd`) keeps its own key
mapping and calls the shared pieces here:

* :func:`load_state_dict_file` / :func:`save_state_dict_file`: `.pt`/`.pth`
  (``torch.load(weights_only=True)``: a pickle that carries code is refused) and
  `.safetensors`.
* :func:`strip_prefixes`: ``module.`` (DataParallel) and similar key prefixes.
* :func:`check_state_dict`: keys and shapes against the torch shapes a model
  expects, one :class:`ConversionError` naming every missing, unexpected and
  mis-shaped key; returns float32 numpy arrays in torch layout.
* Kernel layouts (both directions)::

    conv3d  torch [O, I, kd, kh, kw] <-> flax [kd, kh, kw, I, O]
    conv2d  torch [O, I, kh, kw]     <-> flax [kh, kw, I, O]
    conv1d  torch [O, I, k]          <-> flax [k, I, O]
    linear  torch [O, I]             <-> flax [I, O]
"""

from __future__ import annotations

import fnmatch
import os
import pickle
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ConversionError",
    "check_state_dict",
    "kernel_shape_to_flax",
    "kernel_shape_to_torch",
    "kernel_to_flax",
    "kernel_to_torch",
    "load_state_dict_file",
    "save_state_dict_file",
    "strip_prefixes",
    "to_numpy",
]

Shape = tuple[int, ...]


class ConversionError(ValueError):
    """A state_dict (file or mapping) that cannot be read or does not fit the model it is converted for."""


# ---------------------------------------------------------------- values


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any float dtype, any device) or array-like -> float32 numpy array, same shape."""
    if hasattr(value, "detach"):  # a torch tensor; no torch import needed here
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _shape(value: Any) -> Shape:
    return tuple(int(d) for d in value.shape) if hasattr(value, "shape") else tuple(np.shape(value))


# ---------------------------------------------------------------- layouts


def kernel_to_flax(weight: np.ndarray) -> np.ndarray:
    """A torch conv/linear weight -> the Flax kernel (a transposed view, same dtype).

    conv ``[O, I, *k]`` -> ``[*k, I, O]`` (conv1d/2d/3d); linear ``[O, I]`` -> ``[I, O]``.
    """
    weight = np.asarray(weight)
    if weight.ndim < 2:
        raise ValueError(f"a conv/linear weight has >= 2 dims, got shape {weight.shape}")
    return weight.transpose(*range(2, weight.ndim), 1, 0)


def kernel_to_torch(kernel: np.ndarray) -> np.ndarray:
    """A Flax conv/dense kernel -> the torch weight; inverse of :func:`kernel_to_flax`.

    conv ``[*k, I, O]`` -> ``[O, I, *k]``; dense ``[I, O]`` -> ``[O, I]``. A transposed view, same dtype.
    """
    kernel = np.asarray(kernel)
    n = kernel.ndim
    if n < 2:
        raise ValueError(f"a conv/dense kernel has >= 2 dims, got shape {kernel.shape}")
    return kernel.transpose(n - 1, n - 2, *range(n - 2))


def kernel_shape_to_torch(shape: Sequence[int]) -> Shape:
    """Flax kernel shape ``[*k, I, O]`` -> torch weight shape ``[O, I, *k]`` (dense ``[I, O]`` -> ``[O, I]``)."""
    shape = tuple(int(d) for d in shape)
    return (shape[-1], shape[-2], *shape[:-2])


def kernel_shape_to_flax(shape: Sequence[int]) -> Shape:
    """Torch weight shape ``[O, I, *k]`` -> Flax kernel shape ``[*k, I, O]``; inverse of :func:`kernel_shape_to_torch`."""
    shape = tuple(int(d) for d in shape)
    return (*shape[2:], shape[1], shape[0])


# ---------------------------------------------------------------- keys and shapes


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: Sequence[str] = ("module.",)) -> dict[str, Any]:
    """Keys without the given prefixes, each tried once in order (e.g. ``module.`` then ``__S__.``); values untouched."""
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _some(keys: Sequence[str], show: int) -> str:
    return f"{list(keys[:show])}{'...' if len(keys) > show else ''}"


def check_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, Sequence[int]],
    *,
    what: str,
    ignore: Iterable[str] = (),
    hint: str = "",
    show: int = 5,
) -> dict[str, np.ndarray]:
    """Checks a state_dict against the torch shapes a model expects; its tensors as float32 numpy arrays.

    Args:
      state_dict: key -> torch tensor or array (any float dtype), prefixes already stripped.
      expected: key -> torch shape (conv weights ``[O, I, *k]``, linear ``[O, I]``), in the
        order the result and error messages list them.
      what: how the error begins, e.g. "not an S3FD state_dict".
      ignore: fnmatch patterns (e.g. ``"*num_batches_tracked"``) of keys that may be present
        or absent and are never checked nor returned, on either side.
      hint: appended to the error (what to do about it).
      show: at most this many keys listed per kind of problem.
    Returns:
      expected key (minus ignored) -> float32 numpy array in torch layout, in `expected`'s order.
    Raises:
      ConversionError: one message naming the missing keys, the unexpected keys and the
        keys whose shape differs (got vs. expected).
    """
    patterns = tuple(ignore)

    def ignored(key: str) -> bool:
        return any(fnmatch.fnmatchcase(key, p) for p in patterns)

    wanted = {k: tuple(int(d) for d in s) for k, s in expected.items() if not ignored(k)}
    missing = [k for k in wanted if k not in state_dict]
    unexpected = [k for k in state_dict if k not in wanted and not ignored(k)]
    wrong = [
        f"{k}: {_shape(state_dict[k])}, expected {s}"
        for k, s in wanted.items()
        if k in state_dict and _shape(state_dict[k]) != s
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{len(keys)} {label} {_some(keys, show)}"
            for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong))
            if keys
        ]
        raise ConversionError(f"{what}: {', '.join(problems)}" + (f"; {hint}" if hint else ""))
    return {k: to_numpy(state_dict[k]) for k in wanted}


# ---------------------------------------------------------------- files


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads a `.pt`/`.pth` (torch.load, weights_only=True) or `.safetensors` state_dict.

    Returns key -> numpy array: for `.pt` float32 (every tensor, integer counters included,
    goes through :func:`to_numpy`) in the file's order; for `.safetensors` the stored dtype,
    keys sorted (the format keeps no order).
    A pickle that carries code is refused (ConversionError, nothing executed); training
    checkpoints that wrap the weights in {"state_dict"|"model"|"ema": ...} are unwrapped.
    Raises FileNotFoundError for a missing file, ConversionError for an unreadable one.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; pass a state_dict file (.pt/.pth/.safetensors)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            detail = " ".join(str(e).split())
            raise ConversionError(
                f"{path}: not a readable .safetensors file ({detail}); re-download or re-save it"
            ) from None
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("reading .pt files needs PyTorch: pip install 'diff2lip-jax[torch]'") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        if "GLOBAL" in str(e):  # the unpickler met a function or class reference
            raise ConversionError(
                f"{path}: refused, the file holds pickled code, not just tensors; "
                "re-save it as a plain state_dict of tensors"
            ) from None
        raise ConversionError(f"{path}: not a readable PyTorch state_dict file") from None
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "ema"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ConversionError(f"{path}: not a state_dict (a mapping of names to tensors)")
    return {k: to_numpy(v) for k, v in obj.items()}


def save_state_dict_file(
    state_dict: Mapping[str, np.ndarray], path: str | os.PathLike[str], overwrite: bool = False
) -> None:
    """Writes `.pt`/`.pth` (torch.save of an ordered dict of float32 tensors) or `.safetensors`
    (arrays as given, dtype kept), atomically (a temporary file in the same directory, then rename).

    `.pt` keeps `state_dict`'s key order (safetensors stores keys sorted). Raises FileExistsError if `path` exists and
    not `overwrite`, ValueError for another file extension.
    """
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; choose another --out or pass --overwrite")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    os.close(fd)
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, tmp)
        elif path.endswith((".pt", ".pth")):
            import torch

            torch.save({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state_dict.items()}, tmp)
        else:
            raise ValueError(f"{path}: use a .pt, .pth or .safetensors file name")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
