"""Image and distribution metrics: PSNR, SSIM and the Fréchet distance (numpy/scipy).

Conventions shared by the evaluation:

* Images are uint8 (or float in [0, 255]) RGB ``[N, H, W, 3]``; both metrics use
  ``data_range = 255`` and are computed per frame, in float64.
* PSNR = ``10 log10(255^2 / MSE)`` with the MSE over all pixels and channels of a
  frame (``skimage.metrics.peak_signal_noise_ratio``). Identical frames give
  ``+inf``; the JSON writer spells it ``"inf"`` (see ``run.py``).
* SSIM follows ``skimage.metrics.structural_similarity(channel_axis=-1,
  data_range=255)`` with its defaults: a 7x7 uniform window, K1 = 0.01,
  K2 = 0.03, sample covariance (N / (N - 1)), each channel separately, and the
  mean over the channels of each map's interior (a 3-pixel border, where the
  window leaves the image, is dropped). ``gaussian=True`` gives Wang et al.'s
  variant instead (11x11 Gaussian window with sigma 1.5, population covariance),
  as skimage's ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.
  The implementation is vectorised over frames (scipy.ndimage filters on the
  whole batch) and equals skimage's per-frame result to float64 round-off.
* The Fréchet distance between N(mu1, S1) and N(mu2, S2) is
  ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``.
  :func:`frechet_distance` computes the matrix square root with
  ``scipy.linalg.sqrtm`` exactly as pytorch-fid does (retry with 1e-6 on the
  diagonals when the product is singular, drop a negligible imaginary part);
  :func:`frechet_distance_spectral` gets the same trace from a symmetric
  eigendecomposition (``tr (S1 S2)^(1/2) = sum sqrt eig(S1^(1/2) S2 S1^(1/2))``),
  which is better conditioned; and from features, with fewer samples than
  dimensions, :func:`fid_from_features` uses the singular values of the
  cross-Gram matrix instead (exact too, and seconds instead of a minute at 2048-d).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.linalg
import scipy.ndimage

DATA_RANGE = 255.0
SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_WINDOW = 7  # skimage's default uniform window
GAUSSIAN_SIGMA = 1.5  # Wang et al. 2004; truncated at 3.5 sigma -> 11x11, as skimage

__all__ = [
    "psnr",
    "ssim",
    "gaussian_stats",
    "frechet_distance",
    "frechet_distance_spectral",
    "fid_from_features",
    "FIDMethod",
    "FID_METHODS",
]

FIDMethod = Literal["sqrtm", "spectral"]
FID_METHODS = ("sqrtm", "spectral")


def _pair_batch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float64 ``[N, H, W, C]`` (a single image ``[H, W, C]`` becomes N = 1)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C] or [H, W, C], got shape {a.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE) -> np.ndarray:
    """Per-frame PSNR in dB.

    Args:
      a, b: ``[N, H, W, C]`` (or one ``[H, W, C]``) images on the same scale, e.g. uint8.
      data_range: the peak value (255 for uint8).

    Returns:
      float64 ``[N]``; ``+inf`` where the frames are identical.
    """
    a, b = _pair_batch(a, b)
    mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = DATA_RANGE, gaussian: bool = False) -> np.ndarray:
    """Per-frame mean SSIM (skimage's ``structural_similarity``, see module doc).

    Args:
      a, b: ``[N, H, W, C]`` (or one ``[H, W, C]``) images, H and W >= 7 (11 with ``gaussian``).
      data_range: the dynamic range of the pixel values (255 for uint8).
      gaussian: Wang et al.'s Gaussian-weighted variant instead of skimage's default.

    Returns:
      float64 ``[N]``, 1.0 for identical frames.
    """
    a, b = _pair_batch(a, b)
    if gaussian:
        truncate = 3.5
        win = 2 * int(truncate * GAUSSIAN_SIGMA + 0.5) + 1

        def filt(x: np.ndarray) -> np.ndarray:
            # sigma 0 on the batch and channel axes: each 2-D map is filtered on its own.
            return scipy.ndimage.gaussian_filter(x, sigma=(0, GAUSSIAN_SIGMA, GAUSSIAN_SIGMA, 0), truncate=truncate)

        cov_norm = 1.0
    else:
        win = SSIM_WINDOW

        def filt(x: np.ndarray) -> np.ndarray:
            return scipy.ndimage.uniform_filter(x, size=(1, win, win, 1))

        cov_norm = win * win / (win * win - 1.0)  # skimage's sample covariance
    if min(a.shape[1:3]) < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels, got {a.shape[1]}x{a.shape[2]}")
    ux, uy = filt(a), filt(b)
    vx = cov_norm * (filt(a * a) - ux * ux)
    vy = cov_norm * (filt(b * b) - uy * uy)
    vxy = cov_norm * (filt(a * b) - ux * uy)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return s[:, pad : s.shape[1] - pad, pad : s.shape[2] - pad, :].mean(axis=(1, 2, 3))


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]``, N >= 2."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [N, D] with N >= 2 samples, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _check_stats(mu1, sigma1, mu2, sigma2) -> tuple[np.ndarray, ...]:
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    return mu1, sigma1, mu2, sigma2


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance of two Gaussians, pytorch-fid's ``calculate_frechet_distance``.

    ``sqrtm(S1 S2)``; if that is not finite (singular product), the covariances get
    ``eps`` on their diagonals and it is retried; an imaginary part (round-off: the
    true root of a product of PSD matrices has a real spectrum) is dropped when the
    diagonal's imaginary part is below 1e-3, else ValueError, as pytorch-fid.

    Args:
      mu1, mu2: means ``[D]``; sigma1, sigma2: covariances ``[D, D]``.

    Returns:
      The squared Fréchet (2-Wasserstein) distance, a Python float.
    """
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            imag = np.max(np.abs(covmean.imag))
            raise ValueError(f"Fréchet distance: sqrtm has an imaginary component of {imag:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """Symmetric PSD square root via eigh (negative round-off eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((sigma + sigma.T) * 0.5)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_spectral(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """The same distance as :func:`frechet_distance`, via symmetric eigendecompositions.

    ``S1 S2`` is similar to the PSD matrix ``S1^(1/2) S2 S1^(1/2)``, so
    ``tr (S1 S2)^(1/2)`` is the sum of the square roots of the latter's eigenvalues.
    """
    mu1, sigma1, mu2, sigma2 = _check_stats(mu1, sigma1, mu2, sigma2)
    root1 = _psd_sqrt(sigma1)
    m = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) * 0.5), 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def _trace_sqrt_product_gram(f1: np.ndarray, f2: np.ndarray) -> float:
    """``tr (S1 S2)^(1/2)`` for the sample covariances of ``f1 [N1, D]`` and ``f2 [N2, D]``.

    With centred features A, B: ``S1 S2 = A^T A B^T B / c`` (c = (N1-1)(N2-1)); its
    non-zero eigenvalues are those of ``(A B^T)(A B^T)^T / c``, i.e. the squared
    singular values of ``A B^T / sqrt(c)``, so the trace is that matrix's nuclear norm.
    """
    a = f1 - f1.mean(axis=0)
    b = f2 - f2.mean(axis=0)
    c = (len(f1) - 1) * (len(f2) - 1)
    return float(np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(c))


def fid_from_features(features1: np.ndarray, features2: np.ndarray, method: FIDMethod = "sqrtm") -> float:
    """FID between two feature sets ``[N1, D]`` and ``[N2, D]`` (each N >= 2).

    ``method``: "sqrtm" (pytorch-fid's computation, the numbers papers report) or
    "spectral" (the same quantity from eigen/singular values, see module doc;
    differs from "sqrtm" only by sqrtm's round-off).
    """
    if method not in FID_METHODS:
        raise ValueError(f"FID method must be one of {FID_METHODS}, got {method!r}")
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    mu1, s1 = gaussian_stats(f1)
    mu2, s2 = gaussian_stats(f2)
    if method == "sqrtm":
        return frechet_distance(mu1, s1, mu2, s2)
    dim = f1.shape[1]
    if len(f1) * len(f2) * min(len(f1), len(f2)) < dim**3:  # the Gram route is cheaper
        diff = mu1 - mu2
        return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product_gram(f1, f2))
    return frechet_distance_spectral(mu1, s1, mu2, s2)
