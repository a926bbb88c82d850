"""Diffusion package: official parity (toy DDIM golden), respacing grammar, Gaussian
identities, variational-bound terms, sharded sampling and the tiny UNet end to end."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import rel_l2
from helpers_config import load_config
from scipy import integrate, stats

from diff2lip_jax.diffusion import (
    create_diffusion,
    create_diffusion_from_config,
    discretized_gaussian_log_likelihood,
    get_named_beta_schedule,
    normal_kl,
    respace_betas,
    space_timesteps,
    start_noise,
)

GOLDEN_SAMPLE_RTOL = 1e-5  # relative L2, the reference README's bound for the sampler
SHARDED_ATOL = 1e-5


def nchw_to_nhwc(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def toy_model(x, t, cond_img, mask):
    """The golden's toy eps model (ddim_toy_golden.json); t is the ORIGINAL timestep."""
    scale = t.astype(jnp.float32)[:, None, None, None] / 1000.0
    eps = jnp.tanh(x * mask + (1.0 - mask) * cond_img) * scale + 0.1 * cond_img
    return jnp.concatenate([eps, jnp.full_like(eps, 0.3)], axis=-1)


_SEEN_T: list[np.ndarray] = []


def recording_toy_model(x, t, cond_img, mask):
    jax.debug.callback(lambda tt: _SEEN_T.append(np.asarray(tt)), t, ordered=True)
    return toy_model(x, t, cond_img, mask)


# ------------------------------------------------------------------ official golden


@pytest.fixture(scope="module")
def golden(reference_dir):
    meta = json.loads((reference_dir / "ddim_toy_golden.json").read_text())
    return meta, dict(np.load(reference_dir / "ddim_toy_golden.npz"))


@pytest.fixture(scope="module")
def golden_diffusion(golden):
    meta, _ = golden
    return create_diffusion(
        meta["diffusion_steps"], meta["noise_schedule"], meta["learn_sigma"], meta["timestep_respacing"]
    )


def test_golden_schedule(golden, golden_diffusion):
    _, ref = golden
    diff = golden_diffusion
    np.testing.assert_array_equal(np.asarray(diff.timestep_map), ref["timestep_map"])
    np.testing.assert_allclose(np.asarray(diff.alphas_cumprod), ref["alphas_cumprod"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(diff.betas), ref["betas"], rtol=1e-6)
    # The float64 host math matches the official float64 numbers to rounding.
    betas64, tmap = respace_betas(get_named_beta_schedule("linear", 1000), space_timesteps(1000, "ddim25"))
    np.testing.assert_allclose(betas64, ref["betas"], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(tmap, ref["timestep_map"])


def test_golden_ddim_sample(golden, golden_diffusion):
    meta, ref = golden
    kwargs = dict(cond_img=nchw_to_nhwc(ref["cond_img"]), mask=nchw_to_nhwc(ref["mask"]))
    _SEEN_T.clear()
    out = golden_diffusion.ddim_sample_loop(
        recording_toy_model,
        nchw_to_nhwc(ref["noise"]),
        model_kwargs=kwargs,
        clip_denoised=meta["clip_denoised"],
        eta=meta["eta"],
    )
    jax.effects_barrier()
    seen = np.stack(_SEEN_T)
    assert seen.dtype == np.int32 and seen.shape == (25, 2)
    np.testing.assert_array_equal(seen[:, 0], ref["model_timesteps"])
    np.testing.assert_array_equal(seen, np.repeat(seen[:, :1], 2, axis=1))
    assert rel_l2(out, np.transpose(ref["sample"], (0, 2, 3, 1))) < GOLDEN_SAMPLE_RTOL


def test_ddim_intermediates(golden, golden_diffusion):
    _, ref = golden
    noise = nchw_to_nhwc(ref["noise"])
    kwargs = dict(cond_img=nchw_to_nhwc(ref["cond_img"]), mask=nchw_to_nhwc(ref["mask"]))
    plain = golden_diffusion.ddim_sample_loop(toy_model, noise, model_kwargs=kwargs)
    out, xs, x0s = golden_diffusion.ddim_sample_loop(toy_model, noise, model_kwargs=kwargs, return_intermediates=5)
    assert xs.shape == x0s.shape == (5,) + noise.shape
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain))
    np.testing.assert_array_equal(np.asarray(xs[0]), np.asarray(noise))
    assert float(jnp.abs(x0s).max()) <= 1.0  # clip_denoised
    np.testing.assert_array_equal(golden_diffusion.intermediate_timesteps(5), [960, 720, 480, 240, 0])
    # At t=0 the DDIM update returns the x0 prediction itself.
    np.testing.assert_allclose(np.asarray(x0s[-1]), np.asarray(out), atol=1e-6)


# ------------------------------------------------------------------ respacing


def _sections_reference(total: int, counts: list[int]) -> list[int]:
    """Section striding derived with exact rationals (no ties occur for these cases)."""
    steps, start = [], 0
    for k, count in enumerate(counts):
        size = total // len(counts) + (1 if k < total % len(counts) else 0)
        stride = Fraction(size - 1, count - 1)
        steps += [start + round(j * stride) for j in range(count)]
        start += size
    return steps


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("ddim50", list(range(0, 1000, 20))),
        ("ddim25", list(range(0, 1000, 40))),
        ("250", _sections_reference(1000, [250])),
        ("10,20,30", _sections_reference(1000, [10, 20, 30])),
        ("", list(range(1000))),
        ("1000", list(range(1000))),
    ],
)
def test_respacing(spec, expected):
    diff = create_diffusion(1000, "linear", False, spec)
    tmap = np.asarray(diff.timestep_map)
    np.testing.assert_array_equal(tmap, expected)
    assert diff.num_timesteps == len(expected) and diff.original_num_steps == 1000
    # The respaced process hits the original alphas_cumprod at every kept step.
    full = np.cumprod(1.0 - get_named_beta_schedule("linear", 1000))
    np.testing.assert_allclose(np.asarray(diff.alphas_cumprod), full[tmap], rtol=1e-6)


def test_respacing_sections_layout():
    steps = sorted(space_timesteps(1000, "10,20,30"))
    # Sections of 334, 333, 333 steps; each keeps its first and last step.
    assert steps[0] == 0 and steps[9] == 333
    assert steps[10] == 334 and steps[29] == 666
    assert steps[30] == 667 and steps[-1] == 999
    assert sorted(space_timesteps(300, [10, 15, 20]))[:10] == [round(i * 99 / 9) for i in range(10)]


@pytest.mark.parametrize("spec", ["ddim999", "ddim1", "500,600", "1001", "ddimx", "a,b"])
def test_respacing_errors(spec):
    with pytest.raises(ValueError):
        space_timesteps(1000, spec)


def test_beta_schedules():
    linear = get_named_beta_schedule("linear", 250)
    assert linear.dtype == np.float64
    np.testing.assert_allclose(linear[[0, -1]], [4 * 1e-4, 4 * 0.02], rtol=1e-12)
    cosine = get_named_beta_schedule("cosine", 100)
    f = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    expected = [min(1 - f((i + 1) / 100) / f(i / 100), 0.999) for i in range(100)]
    np.testing.assert_allclose(cosine, expected, rtol=1e-12)
    with pytest.raises(NotImplementedError):
        get_named_beta_schedule("sqrt", 10)


def test_model_timesteps_and_config():
    cfg = load_config("diff2lip", "tiny")
    diff = create_diffusion_from_config(cfg)  # whole config: model keys ignored
    assert diff.num_timesteps == 25 and diff.learn_sigma == cfg.model.learn_sigma
    assert diff.predict_xstart == cfg.diffusion.predict_xstart
    train = create_diffusion_from_config(cfg.diffusion, timestep_respacing="")
    assert train.num_timesteps == 1000
    t = jnp.array([0, 24, 3])
    np.testing.assert_array_equal(np.asarray(diff.model_timesteps(t)), [0, 960, 120])
    rescaled = create_diffusion(500, "linear", False, "ddim10", rescale_timesteps=True)
    got = rescaled.model_timesteps(jnp.array([9, 1]))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), [450 * 2.0, 50 * 2.0])


# ------------------------------------------------------------------ Gaussian identities


@pytest.fixture(scope="module")
def full_diffusion():
    return create_diffusion(1000, "linear", True, "")


def test_q_sample_and_x0_roundtrip(full_diffusion):
    rng = np.random.default_rng(0)
    x0 = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
    eps = jnp.asarray(rng.standard_normal((4, 8, 8, 3)), jnp.float32)
    t = jnp.array([0, 10, 500, 999])
    xt = full_diffusion.q_sample(x0, t, eps)
    ab = np.cumprod(1 - get_named_beta_schedule("linear", 1000))[np.asarray(t)][:, None, None, None]
    np.testing.assert_allclose(np.asarray(xt), np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps, atol=1e-5)
    # Inverting at large t divides by sqrt(abar) ~ 6e-3, so float32 rounding grows to ~1e-4.
    np.testing.assert_allclose(
        np.asarray(full_diffusion.predict_xstart_from_eps(xt, t, eps)), np.asarray(x0), atol=2e-4
    )
    np.testing.assert_allclose(
        np.asarray(full_diffusion.predict_eps_from_xstart(xt, t, x0)), np.asarray(eps), atol=2e-4
    )


def test_posterior_matches_gaussian_product(full_diffusion):
    rng = np.random.default_rng(1)
    x0 = rng.uniform(-1, 1, (3, 4, 4, 3))
    xt = rng.standard_normal((3, 4, 4, 3))
    t = np.array([1, 300, 999])
    betas = get_named_beta_schedule("linear", 1000)
    ab = np.cumprod(1 - betas)
    ab_prev, beta = ab[t - 1], betas[t]
    # Product of q(x_{t-1}|x0) = N(sqrt(ab_prev) x0, 1-ab_prev)
    # and q(x_t|x_{t-1}) = N(sqrt(1-beta) x_{t-1}, beta), normalised over x_{t-1}.
    precision = 1 / (1 - ab_prev) + (1 - beta) / beta
    var = 1 / precision
    b = lambda a: a[:, None, None, None]
    mean = b(var) * (b(np.sqrt(ab_prev) / (1 - ab_prev)) * x0 + b(np.sqrt(1 - beta) / beta) * xt)
    got_mean, got_var, got_log = full_diffusion.q_posterior_mean_variance(
        jnp.asarray(x0, jnp.float32), jnp.asarray(xt, jnp.float32), jnp.asarray(t)
    )
    np.testing.assert_allclose(np.asarray(got_mean), mean, atol=1e-5)
    np.testing.assert_allclose(np.asarray(got_var).ravel(), var, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(got_log).ravel(), np.log(var), rtol=1e-5)
    # The posterior variance is 0 at t=0; its clipped log borrows step 1.
    log_clipped = np.asarray(full_diffusion.posterior_log_variance_clipped)
    assert np.asarray(full_diffusion.posterior_variance)[0] == 0.0
    assert log_clipped[0] == log_clipped[1]


def test_learned_range_variance_and_xstart(full_diffusion):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 4, 4, 3)), jnp.float32)
    t = jnp.array([0, 5, 999])
    for v, table in ((-1.0, full_diffusion.posterior_log_variance_clipped), (1.0, full_diffusion.log_betas)):
        out = jnp.concatenate([jnp.zeros_like(x), jnp.full_like(x, v)], axis=-1)
        got = full_diffusion.p_mean_variance_from_output(out, x, t)["log_variance"]
        np.testing.assert_allclose(np.asarray(got[:, 0, 0, 0]), np.asarray(table)[np.asarray(t)], rtol=1e-6)
    xstart = create_diffusion(1000, "linear", False, "", predict_xstart=True)
    pred = xstart.p_mean_variance_from_output(2 * x, x, t)
    np.testing.assert_array_equal(np.asarray(pred["pred_xstart"]), np.clip(2 * np.asarray(x), -1, 1))
    fixed = create_diffusion(1000, "linear", False, "")
    var = fixed.p_mean_variance_from_output(x, x, t)["variance"].ravel()
    betas = np.asarray(fixed.betas)
    np.testing.assert_allclose(np.asarray(var), [fixed.posterior_variance[1], betas[5], betas[999]])


# ------------------------------------------------------------------ bound terms


def test_normal_kl_closed_form_and_quadrature():
    rng = np.random.default_rng(3)
    m1, m2 = rng.standard_normal(5), rng.standard_normal(5)
    lv1, lv2 = rng.uniform(-2, 1, 5), rng.uniform(-2, 1, 5)
    got = np.asarray(normal_kl(m1, lv1, m2, lv2))
    s1, s2 = np.exp(lv1 / 2), np.exp(lv2 / 2)
    closed = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    np.testing.assert_allclose(got, closed, rtol=1e-5, atol=1e-6)
    for i in range(2):
        p, q = stats.norm(m1[i], s1[i]), stats.norm(m2[i], s2[i])
        numeric, _ = integrate.quad(lambda z, p=p, q=q: p.pdf(z) * (p.logpdf(z) - q.logpdf(z)), -np.inf, np.inf)
        assert abs(numeric - got[i]) < 1e-4


def test_discretized_log_likelihood():
    levels = jnp.asarray(-1.0 + 2.0 * np.arange(256) / 255.0, jnp.float32)
    rng = np.random.default_rng(4)
    means = rng.uniform(-1, 1, 6)
    log_scales = rng.uniform(np.log(0.02), np.log(0.5), 6)
    x = jnp.broadcast_to(levels, (6, 256))
    ll = discretized_gaussian_log_likelihood(
        x,
        means=jnp.broadcast_to(jnp.asarray(means, jnp.float32)[:, None], (6, 256)),
        log_scales=jnp.broadcast_to(jnp.asarray(log_scales, jnp.float32)[:, None], (6, 256)),
    )
    probs = np.exp(np.asarray(ll, np.float64))
    # The bins tile the real line, so their probabilities sum to one.
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    # Interior bins against exact normal CDF differences (the tanh CDF is accurate to ~1e-3).
    edges = np.asarray(levels, np.float64)[1:-1]
    scale = np.exp(log_scales)[:, None]
    exact = stats.norm.cdf((edges + 1 / 255 - means[:, None]) / scale) - stats.norm.cdf(
        (edges - 1 / 255 - means[:, None]) / scale
    )
    np.testing.assert_allclose(probs[:, 1:-1], exact, atol=2e-3)


def test_vb_frozen_mean_and_masked_mse(full_diffusion):
    rng = np.random.default_rng(5)
    shape = (2, 8, 8, 3)
    x0 = jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32)
    noise = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    mask = jnp.zeros((2, 8, 8, 1)).at[:, 4:].set(1.0)
    t = jnp.array([0, 700])

    def model_fn(x, t, w):
        return jnp.concatenate([x * w[0], jnp.tanh(x) * w[1]], axis=-1)

    @jax.jit
    def terms(w):
        return full_diffusion.training_losses(model_fn, x0, t, noise, {"w": w}, mask=mask)

    w = jnp.array([0.3, 0.2])
    out = terms(w)
    assert set(out) >= {"mse", "vb", "loss", "x0_pred"} and out["mse"].shape == (2,)
    np.testing.assert_allclose(np.asarray(out["loss"]), np.asarray(out["mse"] + out["vb"]))
    grad_vb = jax.jit(jax.grad(lambda w: terms(w)["vb"].sum()))(w)
    assert float(grad_vb[0]) == 0.0 and float(grad_vb[1]) != 0.0  # mean frozen, variance trained
    # mse is the mean of (eps - noise)^2 over the lower half only.
    x_t = np.asarray(full_diffusion.q_sample(x0, t, noise))
    err = (0.3 * x_t - np.asarray(noise)) ** 2
    np.testing.assert_allclose(np.asarray(out["mse"]), err[:, 4:].mean(axis=(1, 2, 3)), rtol=1e-5)
    whole = full_diffusion.training_losses(model_fn, x0, t, noise, {"w": w})
    np.testing.assert_allclose(np.asarray(whole["mse"]), err.mean(axis=(1, 2, 3)), rtol=1e-5)


def test_ddpm_matches_numpy_reference():
    """Ancestral sampling with learned-range variance against a float64 numpy loop."""
    diff = create_diffusion(1000, "linear", True, "5")
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 8, 8, 3))
    cond = rng.uniform(-1, 1, (2, 8, 8, 3))
    mask = np.zeros((2, 8, 8, 1))
    mask[:, 4:] = 1.0
    key = jax.random.key(5)
    out = diff.p_sample_loop(
        toy_model,
        jnp.asarray(x, jnp.float32),
        dict(cond_img=jnp.asarray(cond, jnp.float32), mask=jnp.asarray(mask, jnp.float32)),
        rng=key,
    )

    kept = sorted(space_timesteps(1000, "5"))
    ab = np.cumprod(1 - get_named_beta_schedule("linear", 1000))[kept]
    ab_prev = np.append(1.0, ab[:-1])
    betas = 1 - ab / ab_prev
    post_var = betas * (1 - ab_prev) / (1 - ab)
    post_log = np.log(np.append(post_var[1], post_var[1:]))
    for i, t in enumerate(range(4, -1, -1)):
        eps = np.tanh(x * mask + (1 - mask) * cond) * kept[t] / 1000 + 0.1 * cond
        frac = (0.3 + 1) / 2
        log_var = frac * np.log(betas[t]) + (1 - frac) * post_log[t]
        x0 = np.clip(np.sqrt(1 / ab[t]) * x - np.sqrt(1 / ab[t] - 1) * eps, -1, 1)
        mean = (betas[t] * np.sqrt(ab_prev[t]) * x0 + (1 - ab_prev[t]) * np.sqrt(1 - betas[t]) * x) / (1 - ab[t])
        z = np.asarray(jax.random.normal(jax.random.fold_in(key, i), x.shape))
        x = mean + (t != 0) * np.exp(0.5 * log_var) * z
    assert rel_l2(out, x) < 1e-5


# ------------------------------------------------------------------ sharding


def test_ddim_sharded_matches_single_device(golden_diffusion):
    if jax.device_count() < 8:
        pytest.skip("needs 8 (fake CPU) devices, set by conftest")
    rng = np.random.default_rng(6)
    b, s = 8, 16
    noise = jnp.asarray(rng.standard_normal((b, s, s, 3)), jnp.float32)
    cond = jnp.asarray(rng.uniform(-1, 1, (b, s, s, 3)), jnp.float32)
    mask = jnp.zeros((b, s, s, 1)).at[:, s // 2 :].set(1.0)
    key = jax.random.key(11)
    single = golden_diffusion.ddim_sample_loop(toy_model, noise, dict(cond_img=cond, mask=mask), eta=0.5, rng=key)
    mesh = jax.make_mesh((8,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    put = lambda a: jax.device_put(a, sharding)
    sharded = golden_diffusion.ddim_sample_loop(
        toy_model, put(noise), dict(cond_img=put(cond), mask=put(mask)), eta=0.5, rng=key
    )
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=SHARDED_ATOL)
    assert (
        float(
            jnp.abs(single - golden_diffusion.ddim_sample_loop(toy_model, noise, dict(cond_img=cond, mask=mask))).max()
        )
        > 1e-3
    )  # eta noise is used


def test_shared_start_noise():
    noise = start_noise(jax.random.key(0), (4, 8, 8, 3), shared=True)
    np.testing.assert_array_equal(np.asarray(noise[0]), np.asarray(noise[3]))
    assert not np.array_equal(
        np.asarray(start_noise(jax.random.key(0), (4, 8, 8, 3))[0]),
        np.asarray(start_noise(jax.random.key(0), (4, 8, 8, 3))[1]),
    )


def test_sampling_from_shape(golden_diffusion):
    cond = jnp.broadcast_to(jnp.linspace(-1, 1, 8)[None, :, None, None], (3, 8, 8, 3))
    kwargs = dict(cond_img=cond, mask=jnp.ones((3, 8, 8, 1)))
    out = golden_diffusion.ddim_sample_loop(toy_model, (3, 8, 8, 3), kwargs, rng=jax.random.key(1), shared_noise=True)
    # Same start noise and same conditioning: every frame comes out the same.
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(out[2]), atol=1e-6)
    with pytest.raises(ValueError):
        golden_diffusion.ddim_sample_loop(toy_model, (3, 8, 8, 3), kwargs)
    with pytest.raises(ValueError):
        golden_diffusion.p_sample_loop(toy_model, jnp.zeros((3, 8, 8, 3)), kwargs)
    with pytest.raises(ValueError):
        golden_diffusion.ddim_sample_loop(
            toy_model, (3, 8, 8, 3), kwargs, rng=jax.random.key(1), return_intermediates=26
        )


# ------------------------------------------------------------------ tiny UNet end to end


@pytest.fixture(scope="session")
def tiny_unet():
    """The tiny Diff2Lip UNet with random weights.

    init_params gives the parameter tree (through eval_shape, so nothing is compiled);
    weights are drawn directly because compiling init costs ~15 s on CPU, and because
    the initial zero output layer would make every model output 0.
    """
    from diff2lip_jax.models import build_unet, init_params

    cfg = load_config("diff2lip", "tiny")
    # The official head: learned sigmas and eps prediction (the tiny recipe trains x0, fixed sigmas).
    cfg.model.learn_sigma = True
    cfg.diffusion.predict_xstart = False
    model = build_unet(cfg.model)
    shapes = jax.eval_shape(lambda k: init_params(model, k), jax.random.key(0))
    rng = np.random.default_rng(7)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['scale']"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name.endswith("['bias']"):
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = max(int(np.prod(leaf.shape[:-1])), 1)
        return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), leaf.dtype)

    params = jax.tree_util.tree_map_with_path(draw, shapes)

    # One function object for the whole session, so the jitted samplers compile once.
    def model_fn(x, t, params, **kwargs):
        return model.apply({"params": params}, x, t, **kwargs)

    return cfg, model_fn, params


def _tiny_inputs(cfg, batch, seed):
    rng = np.random.default_rng(seed)
    s = cfg.model.image_size
    img = jnp.asarray(rng.uniform(-1, 1, (batch, s, s, 3)), jnp.float32)
    mask = jnp.zeros((batch, s, s, 1)).at[:, s // 2 :].set(1.0)
    noise = jnp.asarray(rng.standard_normal((batch, s, s, 3)), jnp.float32)
    kwargs = dict(
        cond_img=img * (1 - mask) + mask * noise,
        mask=mask,
        ref_img=jnp.asarray(rng.uniform(-1, 1, (batch, s, s, 3)), jnp.float32),
        indiv_mels=jnp.asarray(rng.standard_normal((batch, 80, 16)), jnp.float32),
    )
    return img, noise, kwargs


def test_ddpm_learned_sigma_tiny_unet(tiny_unet):
    cfg, model_fn, params = tiny_unet
    diff = create_diffusion_from_config(cfg.diffusion, timestep_respacing="10")
    assert diff.learn_sigma and diff.num_timesteps == 10
    _, noise, kwargs = _tiny_inputs(cfg, 2, 8)
    sample = diff.p_sample_loop(model_fn, noise, model_kwargs=dict(kwargs, params=params), rng=jax.random.key(3))
    assert sample.shape == noise.shape and sample.dtype == jnp.float32
    assert bool(jnp.isfinite(sample).all())
    assert float(jnp.abs(sample - noise).mean()) > 0.1


def test_training_losses_tiny_unet(tiny_unet):
    cfg, model_fn, params = tiny_unet
    diff = create_diffusion_from_config(cfg, timestep_respacing="")
    x0, noise, kwargs = _tiny_inputs(cfg, 2, 9)
    mask = kwargs["mask"]
    t = jnp.array([0, 600])
    delta = jnp.asarray(np.random.default_rng(10).standard_normal(x0.shape[:-1] + (6,)), jnp.float32)

    def perturbed(x, t, params, **kw):
        # Changes every output channel, but only outside the region to generate.
        return model_fn(x, t, params, **kw) + (1.0 - kw["mask"]) * delta

    @jax.jit
    def both(params):
        kw = dict(kwargs, params=params)
        return (
            diff.training_losses(model_fn, x0, t, noise, kw, mask=mask),
            diff.training_losses(perturbed, x0, t, noise, kw, mask=mask),
        )

    base, moved = both(params)
    assert set(base) >= {"mse", "vb", "loss", "x0_pred"}
    for key in ("mse", "vb", "loss"):
        assert base[key].shape == (2,) and base[key].dtype == jnp.float32
        assert bool(jnp.isfinite(base[key]).all())
    assert base["x0_pred"].shape == x0.shape and bool(jnp.isfinite(base["x0_pred"]).all())
    for key in ("mse", "vb"):
        np.testing.assert_allclose(np.asarray(moved[key]), np.asarray(base[key]), rtol=1e-6)
    # x0_pred is the eps reparametrisation of the model output on x_t.
    expected = diff.predict_xstart_from_eps(base["x_t"], t, base["model_output"][..., :3])
    np.testing.assert_allclose(np.asarray(base["x0_pred"]), np.asarray(expected), atol=1e-6)
