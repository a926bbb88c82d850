"""Shared benchmark helpers: inputs, timing, XLA FLOPs, the official PyTorch reference."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np


def make_inputs(cfg, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """NHWC float32 inputs of the model's size (lower half masked)."""
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    mask = np.zeros((batch, s, s, 1), np.float32)
    mask[:, s // 2 :] = 1
    return dict(
        x=rng.standard_normal((batch, s, s, 3)).astype(np.float32),
        t=rng.integers(0, 1000, batch).astype(np.int32),
        cond_img=rng.uniform(-1, 1, (batch, s, s, 3)).astype(np.float32),
        mask=mask,
        ref_img=rng.uniform(-1, 1, (batch, s, s, 3 * cfg.nrefer)).astype(np.float32),
        indiv_mels=rng.standard_normal((batch, 80, 16)).astype(np.float32),
        target=rng.standard_normal((batch, s, s, cfg.out_channels)).astype(np.float32),
    )


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (compilation, allocator)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0]
    return float(cost.get("flops", 0.0)) if cost else 0.0


def jax_calls(model, params, inputs, modes) -> dict[str, tuple]:
    """{mode: (call, XLA FLOPs per call)}: `call()` runs the compiled forward / train step once
    and blocks until it is done. Compiled here; the first call still warms up the allocator."""
    import jax
    import jax.numpy as jnp
    import optax

    kw = {k: jnp.asarray(inputs[k]) for k in ("cond_img", "mask", "ref_img", "indiv_mels")}
    x, t, target = jnp.asarray(inputs["x"]), jnp.asarray(inputs["t"]), jnp.asarray(inputs["target"])
    calls = {}
    if "forward" in modes:
        fwd = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, **kw))
        compiled_fwd = fwd.lower(params, x, t).compile()
        calls["forward"] = (lambda: compiled_fwd(params, x, t).block_until_ready(), flops_of(compiled_fwd))
    if "train" in modes:
        tx = optax.adam(1e-4)

        def loss_fn(p):
            return jnp.mean((model.apply({"params": p}, x, t, **kw) - target) ** 2)

        def step(p, opt_state):
            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, opt_state = tx.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state, loss

        opt_state = tx.init(params)
        compiled_step = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state).compile()
        state = [jax.tree.map(jnp.copy, params), opt_state]

        def train():
            state[0], state[1], loss = compiled_step(state[0], state[1])
            loss.block_until_ready()

        calls["train"] = (train, flops_of(compiled_step))
    return calls


def bench_jax(model, params, inputs, modes, repeats) -> dict[str, tuple[float, float]]:
    """{mode: (seconds per call, XLA FLOPs per call)} of the jitted forward / train step."""
    return {
        mode: (timed(call, repeats), flops) for mode, (call, flops) in jax_calls(model, params, inputs, modes).items()
    }


def torch_calls(repo, flags_dict, params, cfg, inputs, modes, state_dict=None) -> dict:
    """{mode: call} of the official TFGModel on `inputs` (NHWC numpy, from make_inputs); `call()`
    runs the forward (no_grad) or one forward+backward+Adam step once.

    Weights: `state_dict` (official layout, numpy) if given, else `params` (Flax,
    converted), else the official initialisation (torch seed 0). Runs no JAX
    computation, so a process that only times torch has no XLA thread pool.
    """
    import torch

    from diff2lip_jax.official_reference import build_official_model

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build_official_model(repo, flags_dict)
    if state_dict is None and params is not None:
        from diff2lip_jax.convert import flax_to_torch

        state_dict = flax_to_torch(params, cfg)
    if state_dict is not None:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))
    x, target = nchw(inputs["x"]), nchw(inputs["target"])
    t = torch.from_numpy(inputs["t"].astype(np.int64))
    kw = dict(
        cond_img=nchw(inputs["cond_img"]),
        mask=nchw(inputs["mask"]),
        ref_img=nchw(inputs["ref_img"]),
        indiv_mels=torch.from_numpy(inputs["indiv_mels"]),
    )
    calls = {}
    if "forward" in modes:

        def fwd():
            with torch.no_grad():
                model(x, t, **kw)

        calls["forward"] = fwd
    if "train" in modes:
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def train():
            opt.zero_grad(set_to_none=True)
            loss = ((model(x, t, **kw) - target) ** 2).mean()
            loss.backward()
            opt.step()

        calls["train"] = train
    return calls


def bench_torch(repo, flags_dict, params, cfg, inputs, modes, repeats, state_dict=None) -> dict[str, float]:
    """Seconds per call of the official TFGModel, {mode: s}; see `torch_calls`."""
    return {
        mode: timed(call, repeats)
        for mode, call in torch_calls(repo, flags_dict, params, cfg, inputs, modes, state_dict).items()
    }


def compile_train_step(cfg, batch: int):
    """The real five-loss train step of `cfg`, jitted with the config's mesh shardings and
    compiled for `batch` sequences: (compiled, state, frozen, batch arrays, mesh, compile s)."""
    import jax

    from diff2lip_jax import parallel
    from diff2lip_jax.train.build import build_modules, init_state
    from diff2lip_jax.train.diff2lip import random_batch
    from diff2lip_jax.train.step import make_train_step

    mesh = parallel.make_mesh(cfg.mesh.data, cfg.mesh.fsdp)
    modules, frozen = build_modules(cfg)
    state = init_state(cfg, modules)
    shardings = parallel.fsdp_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
    arrays = parallel.host_to_global(
        random_batch(batch, modules.model.cfg.image_size, nrefer=modules.model.cfg.nrefer), mesh
    )
    step = jax.jit(
        make_train_step(modules, cfg),
        donate_argnums=0,
        in_shardings=(shardings, parallel.replicated(mesh), parallel.batch_sharding(mesh)),
        out_shardings=(shardings, parallel.replicated(mesh)),
    )
    start = time.perf_counter()
    compiled = step.lower(state, frozen, arrays).compile()
    return compiled, state, frozen, arrays, mesh, time.perf_counter() - start


def memory_bytes(compiled) -> int | None:
    """XLA's per-device estimate for a compiled program: arguments + outputs + temporaries - aliases."""
    mem = compiled.memory_analysis()
    if mem is None:
        return None
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes)
