"""Beta schedules and timestep respacing, in float64 numpy (host-side setup code).

Everything here runs once when a diffusion object is built; the results are cast
to float32 device arrays by `gaussian.GaussianDiffusion.from_betas`. The
numerics follow guided-diffusion (the code Diff2Lip ships) so that a schedule
built here equals the official one bit for bit in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def linear_beta_schedule(num_timesteps: int) -> np.ndarray:
    """Ho et al.'s linear betas, stretched so any T behaves like T=1000.

    Returns float64 [T] from 1e-4 * (1000/T) to 0.02 * (1000/T).
    """
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def betas_for_alpha_bar(
    num_timesteps: int, alpha_bar: Callable[[np.ndarray], np.ndarray], max_beta: float = 0.999
) -> np.ndarray:
    """Betas that discretise a continuous alpha_bar(s), s in [0, 1].

    beta_i = min(1 - alpha_bar((i+1)/T) / alpha_bar(i/T), max_beta); float64 [T].
    `alpha_bar` must accept a float64 numpy array.
    """
    i = np.arange(num_timesteps, dtype=np.float64)
    ratio = alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps)
    # max_beta keeps the last steps away from beta=1, where log-variances blow up.
    return np.minimum(1.0 - ratio, max_beta)


def cosine_beta_schedule(num_timesteps: int) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule (offset s=0.008); float64 [T]."""
    return betas_for_alpha_bar(num_timesteps, lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2)


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """'linear' or 'cosine' betas for `num_timesteps` steps; float64 [T]."""
    if name == "linear":
        return linear_beta_schedule(num_timesteps)
    if name == "cosine":
        return cosine_beta_schedule(num_timesteps)
    raise NotImplementedError(f"unknown beta schedule: {name!r} (choose 'linear' or 'cosine')")


def _ddim_steps(num_timesteps: int, desired_count: int) -> set[int]:
    # The smallest integer stride giving exactly the desired count, as in the DDIM paper.
    for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired_count:
            return set(range(0, num_timesteps, stride))
    raise ValueError(f"cannot create exactly {desired_count} steps out of {num_timesteps} with an integer stride")


def space_timesteps(num_timesteps: int, section_counts: str | Sequence[int]) -> set[int]:
    """The original timesteps a respaced process keeps (guided-diffusion's grammar).

    `section_counts` is "ddimN" (fixed integer stride giving exactly N steps, one
    section only), a comma string "a,b,c", or a sequence of ints: the T steps are
    cut into len(counts) nearly equal sections (the first T % n sections one step
    longer) and section k keeps counts[k] steps evenly spread over it, first and
    last step included. Raises ValueError when a count cannot be met.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            return _ddim_steps(num_timesteps, int(section_counts[len("ddim") :]))
        section_counts = [int(part) for part in section_counts.split(",")]
    counts = [int(c) for c in section_counts]
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    kept: list[int] = []
    for k, count in enumerate(counts):
        size = size_per + (1 if k < extra else 0)
        if size < count:
            raise ValueError(f"cannot divide section of {size} steps into {count}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        # Positions are accumulated by repeated addition (np.cumsum is sequential),
        # then rounded half-to-even, so .5 ties land exactly where the official code puts them.
        offsets = np.concatenate([[0.0], np.cumsum(np.full(max(count - 1, 0), stride))])[:count]
        kept.extend(int(start + o) for o in np.round(offsets))
        start += size
    return set(kept)


def respace_betas(betas: np.ndarray, use_timesteps: set[int] | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Betas of the process that visits only `use_timesteps` of `betas`' process.

    The new betas reproduce the original alphas_cumprod at the kept steps:
    beta'_k = 1 - abar[s_k] / abar[s_{k-1}] (abar[s_{-1}] = 1).
    Returns (float64 [S] betas, int64 [S] timestep_map = sorted kept steps).
    """
    betas = np.asarray(betas, dtype=np.float64)
    timestep_map = np.array(sorted(int(s) for s in use_timesteps), dtype=np.int64)
    if timestep_map.size == 0:
        raise ValueError("respacing keeps no timesteps")
    if timestep_map[0] < 0 or timestep_map[-1] >= betas.shape[0]:
        raise ValueError(f"timesteps {timestep_map[[0, -1]]} outside [0, {betas.shape[0]})")
    alphas_cumprod = np.cumprod(1.0 - betas)
    kept = alphas_cumprod[timestep_map]
    previous = np.concatenate([[1.0], kept[:-1]])
    return 1.0 - kept / previous, timestep_map


def respacing_steps(num_timesteps: int, timestep_respacing: str | Sequence[int] | None) -> set[int]:
    """`space_timesteps`, with "" / None meaning no respacing (all T steps)."""
    if timestep_respacing is None or (isinstance(timestep_respacing, str) and timestep_respacing == ""):
        return set(range(num_timesteps))
    if not isinstance(timestep_respacing, str) and len(timestep_respacing) == 0:
        return set(range(num_timesteps))
    return space_timesteps(num_timesteps, timestep_respacing)
