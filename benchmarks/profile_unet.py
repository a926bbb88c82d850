"""Where the UNet's jitted train step (or forward) spends its time on this backend, per XLA op class.

    python benchmarks/profile_unet.py                       # official config, train step, batch 1
    python benchmarks/profile_unet.py --mode=forward --top=40

Runs the same step as benchmarks/unet.py (value_and_grad of an L2 loss, optax
Adam, params and optimiser state donated), warms it up, traces one call with
jax.profiler and prints the traced op time grouped by (phase, layer kind, XLA
op kind): phase is fwd / bwd / opt from the op's metadata (opt also holds ops
with no metadata, e.g. layout copies); layer kind is gn (GroupNorm), attn, or
empty. Caveats: XLA:CPU runs independent thunks concurrently, so durations of
overlapping ops include contention, and the Eigen convolutions run
asynchronously, so their events understate them (the call's wall time minus
the op total is mostly convolution time).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import re
import tempfile
import time

from absl import app, flags

from diff2lip_jax import cli, xla_flags

cli.define_config_flag("model config (config.model); default the official model")
flags.DEFINE_integer("batch", 1, "frames per call")
flags.DEFINE_enum("mode", "train", ["train", "forward"], "what to trace")
flags.DEFINE_integer("top", 30, "rows to print")
flags.DEFINE_string("trace_dir", None, "where the trace goes (default: a temporary directory)")
FLAGS = flags.FLAGS

_SKIP = ("$", "ThunkExecutor", "PjitFunction", "SlinkyThreadPool", "end: ")


def _step(model, params, inputs, mode):
    """A no-argument callable running one jitted call, and the jitted function's lowering args."""
    import jax
    import jax.numpy as jnp
    import optax

    kw = {k: jnp.asarray(inputs[k]) for k in ("cond_img", "mask", "ref_img", "indiv_mels")}
    x, t, target = (jnp.asarray(inputs[k]) for k in ("x", "t", "target"))
    if mode == "forward":
        fn = jax.jit(lambda p: model.apply({"params": p}, x, t, **kw))
        return (lambda: fn(params).block_until_ready()), fn, (params,)
    tx = optax.adam(1e-4)

    def step(p, opt_state):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((model.apply({"params": p}, x, t, **kw) - target) ** 2))(p)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    fn = jax.jit(step, donate_argnums=(0, 1))
    state = [params, tx.init(params)]

    def run():
        state[0], state[1], loss = fn(state[0], state[1])
        loss.block_until_ready()

    return run, fn, state


def _op_metadata(hlo_text: str) -> dict[str, str]:
    """{instruction name: its op_name metadata} over every computation of the compiled HLO."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (.*)", line)
        if m and m.group(1) not in out:
            meta = re.search(r'op_name="([^"]*)"', m.group(2))
            out[m.group(1)] = meta.group(1) if meta else ""
    return out


def _classify(name: str, meta: str) -> str:
    phase = "bwd" if "transpose(jvp" in meta else ("fwd" if "jvp(" in meta else "opt")
    if re.search(r"(input_blocks_\d+|output_blocks_\d+|middle_block)_[12]/", meta):
        layer = "attn"
    elif re.search(r"(layers_0|/norm|out_0|input_block_1|audio_encoder_2|to_style_0)/", meta):
        layer = "gn"
    else:
        layer = ""
    kind = re.sub(r"[.]\d+$", "", name)
    return f"{phase:4s} {layer:5s} {kind}"


def summarise(trace_dir: str, hlo_text: str) -> list[tuple[str, float, int]]:
    """[(class, ms, count)] of the traced ops, largest first."""
    path = glob.glob(f"{trace_dir}/plugins/profile/*/perfetto_trace.json.gz")[0]
    events = json.load(gzip.open(path))["traceEvents"]
    meta = _op_metadata(hlo_text)
    ms, count = collections.defaultdict(float), collections.Counter()
    for e in events:
        if e.get("ph") != "X" or e["name"].startswith(_SKIP) or e["name"] not in meta:
            continue
        key = _classify(e["name"], meta[e["name"]])
        ms[key] += e["dur"] / 1e3
        count[key] += 1
    return sorted(((k, v, count[k]) for k, v in ms.items()), key=lambda r: -r[1])


def main(argv):
    del argv
    xla_flags.apply_cpu_flags()  # before the first JAX computation
    import jax
    from common import make_inputs

    from diff2lip_jax.models import build_unet, init_params

    model = build_unet(FLAGS.config.model)
    params = init_params(model, jax.random.key(0))
    run, fn, args = _step(model, params, make_inputs(model.cfg, FLAGS.batch, 0), FLAGS.mode)
    run()
    run()
    start = time.perf_counter()
    run()
    untraced = time.perf_counter() - start
    trace_dir = FLAGS.trace_dir or tempfile.mkdtemp(prefix="unet_profile_")
    start = time.perf_counter()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        run()
    traced = time.perf_counter() - start
    rows = summarise(trace_dir, fn.lower(*args).compile().as_text())
    total = sum(ms for _, ms, _ in rows)
    print(f"{FLAGS.mode} batch {FLAGS.batch}: {untraced:.3f} s untraced, {traced:.3f} s traced, ops {total:.0f} ms")
    for key, ms, n in rows[: FLAGS.top]:
        print(f"{ms:9.1f} ms {n:5d}  {key}")
    print(f"trace: {trace_dir}")


if __name__ == "__main__":
    app.run(main)
