"""Evaluation of lip-sync videos: PSNR, SSIM, FID, LMD, LSE-C/D, mouth r and the ``diff2lip-evaluate`` CLI.

Modules:
  metrics         PSNR, SSIM (skimage-equivalent, vectorised), Fréchet distance (numpy/scipy)
  fid             pytorch-fid's Inception-v3 in Flax, its weights loader, pool3 features
  lse             syncnet_python's LSE-C/D protocol with pluggable scorers
  syncnet_python  syncnet_python's SyncNet ``S`` in Flax, its MFCC front end and face crops
  lmd             mouth landmark distance with a pluggable landmark model
  mouth           mouth-opening measure and its correlation with the synthetic ground truth
  baselines       the "real" and "unsynced" reference rows, scored from the sources only
  run             filelist evaluation, JSON
  table           the Markdown table (generated rows, then the baseline rows)
  cli             the ``diff2lip-evaluate`` console script (``run``)
"""

from diff2lip_jax.evaluate.lmd import LandmarkModel, landmark_distance, mouth_landmark_distance
from diff2lip_jax.evaluate.lse import SyncResult, SyncScorer, evaluate_sync, make_scorer, sync_from_embeddings
from diff2lip_jax.evaluate.metrics import (
    fid_from_features,
    frechet_distance,
    frechet_distance_spectral,
    gaussian_stats,
    psnr,
    ssim,
)
from diff2lip_jax.evaluate.mouth import correlations, measure_mouth, mouth_darkness, pearson
from diff2lip_jax.evaluate.run import evaluate_pairs, generated_name, read_filelist, render_table

__all__ = [
    "LandmarkModel",
    "landmark_distance",
    "mouth_landmark_distance",
    "correlations",
    "measure_mouth",
    "mouth_darkness",
    "pearson",
    "SyncResult",
    "SyncScorer",
    "evaluate_sync",
    "make_scorer",
    "sync_from_embeddings",
    "fid_from_features",
    "frechet_distance",
    "frechet_distance_spectral",
    "gaussian_stats",
    "psnr",
    "ssim",
    "evaluate_pairs",
    "generated_name",
    "read_filelist",
    "render_table",
]
