"""The jitted five-loss training step on the tiny model (one compile per test module).

The tiny recipe trains with x0 prediction and only L_simple + L2 + SyncNet; these tests
turn the learned sigmas and the official loss weights of each ablation row back on, so
that every one of the five losses (and the vb term) is built and checked.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import max_abs_diff_tree, seed_for
from helpers_config import config_module, load_config

from diff2lip_jax import parallel
from diff2lip_jax.models.discriminator import d_loss
from diff2lip_jax.train.build import build_modules, init_state
from diff2lip_jax.train.diff2lip import random_batch
from diff2lip_jax.train.sampling import GRID_COLUMNS, make_sample_fn
from diff2lip_jax.train.step import generator_losses, make_train_step, sample_timesteps

LOSS_SETS = config_module("diff2lip").LOSS_SETS
LAMBDAS = config_module("diff2lip").LAMBDAS
B = 8  # sequences: divisible by the 8 fake devices of the sharding test


def tiny_config(losses="gan"):
    """The tiny model with learned sigmas and the official weights of the row's losses."""
    cfg = load_config("diff2lip", f"tiny,losses={losses}")
    cfg.model.learn_sigma = True  # diffusion.learn_sigma follows (one flag)
    for name, weight in LAMBDAS.items():
        cfg.loss[name] = weight if name in LOSS_SETS[losses] else 0.0
    return cfg


SIZE = tiny_config().model.image_size


@pytest.fixture(scope="module")
def setup(request):
    cfg = tiny_config()
    modules, frozen = build_modules(cfg)
    state = init_state(cfg, modules)
    batch = random_batch(B, SIZE, seed_for(request.node.nodeid))
    step = jax.jit(make_train_step(modules, cfg))
    new_state, metrics = step(state, frozen, batch)
    return cfg, modules, frozen, state, batch, new_state, jax.device_get(metrics)


def test_one_step_with_all_five_losses(setup):
    _, _, _, state, _, new_state, metrics = setup
    for term in ("simple", "vb", "l2", "sync", "lpips", "gan", "d_loss", "loss", "grad_norm"):
        assert np.isfinite(metrics[term]), term
    assert metrics["finite"] == 1.0 and metrics["grad_norm"] > 0
    # With the zero-initialised output conv (guided-diffusion's init) only that layer
    # has a gradient at step 0; the others start moving from step 1 on.
    out = new_state.params["out_2"]["kernel"]
    assert bool(jnp.any(out != state.params["out_2"]["kernel"]))
    assert int(new_state.step) == 1


@pytest.mark.parametrize("losses", list(LOSS_SETS))
def test_each_ablation_builds_exactly_its_losses(setup, losses):
    cfg_full, modules, frozen, state, batch, _, _ = setup
    cfg = tiny_config(losses)
    on = set(LOSS_SETS[losses])
    variant = dataclasses.replace(
        modules,
        discriminator=modules.discriminator if "gan" in on else None,
        sync_expert=modules.sync_expert if "sync" in on else None,
        lpips_fn=modules.lpips_fn if "lpips" in on else None,
    )
    used = {k: v for k, v in frozen.items() if k in on}
    metrics = jax.eval_shape(make_train_step(variant, cfg), state, used, batch)[1]
    expected = on | {"loss", "grad_norm", "lr", "finite"} | ({"d_loss"} if "gan" in on else set())
    assert set(metrics) == expected


def test_t_is_shared_within_a_sequence_and_varies_across(jax_key):
    t = np.asarray(sample_timesteps(jax_key, 64, 5, 1000))
    per_seq = t.reshape(64, 5)
    assert (per_seq == per_seq[:, :1]).all()
    assert len(np.unique(per_seq[:, 0])) > 50 and t.min() >= 0 and t.max() < 1000


def test_discriminator_learns_and_generator_gets_no_d_loss_gradient(setup):
    cfg, modules, frozen, state, batch, new_state, _ = setup
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), state.d_params, new_state.d_params)
    assert all(jax.tree.leaves(moved))

    def d_objective_through_generator(params):
        _, (_, x0_seq, _) = generator_losses(
            params, frozen, batch, state.d_params, jax.random.key(0), modules=modules, lambdas=cfg.loss
        )
        real = modules.discriminator.apply({"params": state.d_params}, batch["frames"])
        fake = modules.discriminator.apply({"params": state.d_params}, x0_seq)
        return d_loss(real, fake)

    grads = jax.jit(jax.grad(d_objective_through_generator))(state.params)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) == 0.0


@pytest.mark.slow  # ~80 s: compiles the step for a 4x2 mesh
def test_sharded_step_on_a_4x2_mesh_matches_one_device(setup):
    cfg, modules, frozen, state, batch, single_state, metrics = setup
    assert jax.device_count() == 8
    mesh = parallel.make_mesh(4, 2)
    shardings = parallel.fsdp_shardings(state, mesh)
    sharded_state = jax.device_put(state, shardings)
    big = sharded_state.params["input_blocks_1_0"]["in_layers_2"]["kernel"]
    assert not big.sharding.is_fully_replicated and "fsdp" in str(big.sharding.spec)
    assert (
        not sharded_state.opt_state[1][0].mu["input_blocks_1_0"]["in_layers_2"]["kernel"].sharding.is_fully_replicated
    )
    step = jax.jit(
        make_train_step(modules, cfg),
        in_shardings=(shardings, parallel.replicated(mesh), parallel.batch_sharding(mesh)),
        out_shardings=(shardings, parallel.replicated(mesh)),
    )
    new_state, sharded = step(
        sharded_state, jax.device_put(frozen, parallel.replicated(mesh)), parallel.host_to_global(batch, mesh)
    )
    assert abs(float(sharded["loss"]) - float(metrics["loss"])) <= 1e-5
    assert new_state.params["input_blocks_1_0"]["in_layers_2"]["kernel"].sharding == big.sharding
    # The updated parameters too, leaf by leaf (max |sharded - single|): the generator, its EMA
    # and the discriminator. Only the reduction order differs. Measured (one step, default
    # seed): params 8.1e-10, EMA 4.0e-11 (the step moved them by up to 1e-3 and 5e-5), D 6.3e-6
    # of a 2e-4 step: Adam's first step is lr * g / (|g| + eps), which amplifies the float noise
    # of D gradients near eps. Tolerances: ~1000x margin for params/EMA, ~8x for D (still 1/4 of
    # D's step, so a missing or mis-reduced update fails).
    tolerances = {"params": 1e-6, "ema_params": 1e-7, "d_params": 5e-5}
    for name, tol in tolerances.items():
        worst = max_abs_diff_tree(jax.device_get(getattr(new_state, name)), jax.device_get(getattr(single_state, name)))
        assert worst <= tol, f"{name}: max abs diff {worst:.3g} > {tol:g}"


def test_sample_grid_columns_are_in_the_stated_order(setup):
    cfg, modules, _, state, _, _, _ = setup
    batch = {k: jnp.asarray(v[:1]) for k, v in random_batch(B, SIZE, 3).items()}  # 1 sequence: 5 frames
    cfg = tiny_config()
    cfg.train.sample_ddim_steps = 2
    columns = dict(zip(GRID_COLUMNS, make_sample_fn(modules.model, cfg)(state.params, batch, jax.random.key(0))))
    frames = np.asarray(batch["frames"]).reshape(5, SIZE, SIZE, 3)
    half = SIZE // 2
    np.testing.assert_allclose(columns["ground_truth"], frames, atol=1e-6)
    np.testing.assert_allclose(columns["reference"], np.repeat(np.asarray(batch["ref"]), 5, 0), atol=1e-6)
    for name in ("input", "x0_pred", "sample"):  # the upper half is the frame's own, the lower half is not
        np.testing.assert_allclose(columns[name][:, :half], frames[:, :half], atol=1e-6)
        assert np.abs(columns[name][:, half:] - frames[:, half:]).mean() > 0.05, name


def test_two_reference_frames_train(request):
    """nrefer=2: the loader's [B, 2, S, S, 3] references reach the UNet as 6 channels, and a
    two-step run (with only L_simple + L2, to keep the compile small) lowers nothing to NaN."""
    cfg = load_config("diff2lip", "tiny")
    cfg.model.nrefer = 2
    for name in ("sync", "lpips", "gan"):
        cfg.loss[name] = 0.0
    modules, frozen = build_modules(cfg)
    state = init_state(cfg, modules)
    batch = random_batch(2, SIZE, seed_for(request.node.nodeid), nrefer=2)
    step = jax.jit(make_train_step(modules, cfg))
    for _ in range(2):
        state, metrics = step(state, frozen, batch)
    metrics = jax.device_get(metrics)
    assert metrics["finite"] == 1.0 and np.isfinite(metrics["loss"]) and int(state.step) == 2
    # The input conv sees x, cond_img and both references: 3 * (2 + 2) channels.
    assert state.params["input_blocks_0_0"]["kernel"].shape[-2] == 12
