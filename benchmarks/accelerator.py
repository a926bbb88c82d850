"""Accelerator throughput in one run: UNet, DDIM sampler, five-loss train step, generate.

    python benchmarks/accelerator.py                                 # official config, all parts
    python benchmarks/accelerator.py --json=bench.json --peak_tflops=989
    python benchmarks/accelerator.py --config=configs/diff2lip.py:tiny --sampler_frames=8 \
        --ddim_steps=2 --train_batch=1 --generate_seconds=1             # a CPU smoke run (the tests)

Meant for the first hour on a new GPU/TPU (about 5 minutes on one device):

* unet: the config's UNet forward and forward+backward+Adam, float32 and bfloat16, at
  --unet_batch frames per call: frames/s, achieved TFLOP/s (XLA's cost analysis of the
  compiled program), MFU against the device's peak;
* sampler: `generate`'s compiled DDIM sampler (--ddim_steps, default 25) on
  --sampler_frames (default 200, the paper's 8 s video) at the model's size, batches of
  --sampler_batch sharded over all local devices: wall time and frames/s;
* train: the real five-loss train step (UNet, SyncNet, LPIPS, PatchGAN, EMA) at
  --train_batch sequences (default 64, the official batch), halved until it fits:
  steps/s, frames/s, MFU, peak device memory;
* generate: `generate()` end to end on a --generate_seconds synthetic 25 fps clip
  (a random model; fixed VoxCeleb2 crop, so no detector weights): frames/s, and the share
  of the lip-sync pass the devices sit idle (1 - sampler batches x the sampler's time per
  batch / wall time: decode, crop, paste and encode not hidden behind the device).

The frozen SyncNet and LPIPS are random (same FLOPs as trained ones; nothing is downloaded).
Peaks are dense per-chip TFLOP/s from the vendors' sheets (`PEAK_TFLOPS`); float32 uses
the TF32 tensor-core peak on NVIDIA (XLA's default precision for f32 matmuls and
convolutions there) and the bf16 peak on TPU (f32 matmuls run as bf16 passes at default
precision). On an unknown device (CPU) MFU is left out unless --peak_tflops is given.
Prints a table and writes JSON (--json) with the device, versions and XLA flags.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time

from absl import app, flags

from diff2lip_jax import cli

OFFICIAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs", "diff2lip.py") + ":official"
PARTS = ("unet", "sampler", "train", "generate")
DTYPES = ("float32", "bfloat16")
# device_kind substring -> (bfloat16, float32) dense TFLOP/s per chip; the first match counts.
PEAK_TFLOPS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("H100 PCIe", (756.0, 378.0)),
    ("H200", (989.0, 494.0)),  # SXM; the NVL card is 835 / 418
    ("H100", (989.0, 494.0)),  # SXM
    ("A100", (312.0, 156.0)),
    ("TPU v4", (275.0, 275.0)),
    ("TPU v5 lite", (197.0, 197.0)),  # v5e
    ("TPU v5e", (197.0, 197.0)),
    ("TPU v5p", (459.0, 459.0)),
    ("TPU v5", (459.0, 459.0)),
)

cli.define_config_flag("training config (model, diffusion, losses)", OFFICIAL)
flags.DEFINE_list("parts", list(PARTS), f"which parts to run, of {','.join(PARTS)}")
flags.DEFINE_list("dtypes", list(DTYPES), "compute dtypes of the unet and sampler parts")
flags.DEFINE_integer("unet_batch", 8, "frames per UNet call")
flags.DEFINE_integer("sampler_frames", 200, "frames the sampler part generates (200 = 8 s at 25 fps)")
flags.DEFINE_integer("sampler_batch", 200, "frames per sampler call (a multiple of the local devices)")
flags.DEFINE_integer("ddim_steps", 25, "DDIM steps of the sampler and generate parts")
flags.DEFINE_integer("train_batch", 64, "train-step batch in 5-frame sequences (halved until it fits)")
flags.DEFINE_float("generate_seconds", 10.0, "length of the synthetic clip of the generate part")
flags.DEFINE_integer("repeats", 3, "timed calls after the warm-up (median)")
flags.DEFINE_float("peak_tflops", None, "override: peak bfloat16 TFLOP/s per device (float32 too if unknown)")
flags.DEFINE_string("json", None, "also write the results here")
FLAGS = flags.FLAGS


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The device's dense peak TFLOP/s for `dtype` (PEAK_TFLOPS, or --peak_tflops), or None."""
    for key, (bf16, fp32) in PEAK_TFLOPS:
        if key.lower() in device_kind.lower():
            if FLAGS.peak_tflops:
                return FLAGS.peak_tflops if dtype == "bfloat16" else FLAGS.peak_tflops * fp32 / bf16
            return bf16 if dtype == "bfloat16" else fp32
    return FLAGS.peak_tflops


def _rate(flops: float, secs: float, devices: int, kind: str, dtype: str) -> dict:
    tflops = flops / secs / 1e12
    peak = peak_tflops(kind, dtype)
    return dict(tflops=tflops, mfu=tflops / (peak * devices) if peak else None)


def _is_oom(e: Exception) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def bench_unet(cfg, kind: str) -> list[dict]:
    """Forward and forward+backward+Adam of the UNet per dtype, on one device."""
    import jax
    from common import bench_jax, make_inputs

    from diff2lip_jax.generate.model import with_precision
    from diff2lip_jax.models import UNetConfig, build_unet, init_params

    base = UNetConfig.from_flags(cfg.model)
    params = init_params(build_unet(base), jax.random.key(0))
    rows = []
    for dtype in FLAGS.dtypes:
        model = build_unet(with_precision(base, dtype))
        inputs = make_inputs(model.cfg, FLAGS.unet_batch)
        for mode, (secs, flops) in bench_jax(model, params, inputs, ["forward", "train"], FLAGS.repeats).items():
            rows.append(
                dict(
                    part="unet",
                    mode=mode,
                    dtype=dtype,
                    batch=FLAGS.unet_batch,
                    seconds=secs,
                    frames_per_second=FLAGS.unet_batch / secs,
                    gflop_per_frame=flops / 1e9 / FLAGS.unet_batch,
                    **_rate(flops, secs, 1, kind, dtype),
                )
            )
    return rows


def _sampler(cfg, dtype: str):
    from diff2lip_jax.generate import model as model_lib
    from diff2lip_jax.models import UNetConfig

    ucfg = model_lib.with_precision(UNetConfig.from_flags(cfg.model), dtype)
    return model_lib.get_sampler(ucfg, model_lib.diffusion_flags(cfg, ucfg), FLAGS.ddim_steps)


def bench_sampler(cfg, kind: str, params_host) -> list[dict]:
    """generate's DDIM sampler over --sampler_frames frames, per dtype; also seconds per batch."""
    import jax
    import numpy as np
    from common import timed

    from diff2lip_jax.generate import model as model_lib

    rows = []
    size = cfg.model.image_size
    rng = np.random.default_rng(0)
    for dtype in FLAGS.dtypes:
        sampler = _sampler(cfg, dtype)
        bs = sampler.padded_batch(min(FLAGS.sampler_batch, FLAGS.sampler_frames))
        calls = -(-FLAGS.sampler_frames // bs)
        crops = rng.integers(0, 256, (bs, size, size, 3), dtype=np.uint8)
        mels = rng.standard_normal((bs, 80, 16)).astype(np.float32)
        params = sampler.put_params(params_host)
        noise = model_lib.start_noise_image(0, size)
        start = time.perf_counter()
        jax.block_until_ready(sampler(params, noise, crops, crops, mels))
        compile_s = time.perf_counter() - start

        def run(sampler=sampler, params=params, noise=noise, crops=crops, mels=mels, calls=calls):
            jax.block_until_ready([sampler(params, noise, crops, crops, mels) for _ in range(calls)])

        secs = timed(run, FLAGS.repeats)
        # XLA's cost analysis counts a loop body once, so: one UNet forward x steps x calls.
        flops = _forward_flops(sampler.cfg, params_host, bs) * FLAGS.ddim_steps * calls
        rows.append(
            dict(
                part="sampler",
                mode=f"ddim{FLAGS.ddim_steps}",
                dtype=dtype,
                batch=bs,
                frames=calls * bs,
                seconds=secs,
                seconds_per_batch=secs / calls,
                compile_seconds=compile_s,
                frames_per_second=calls * bs / secs,
                **_rate(flops, secs, sampler.num_devices, kind, dtype) if flops else {},
            )
        )
    return rows


def _forward_flops(ucfg, params_host, batch: int) -> float:
    """XLA's FLOP count of one UNet forward on `batch` frames."""
    import jax
    from common import flops_of, make_inputs

    from diff2lip_jax.models import build_unet

    model = build_unet(ucfg)
    inputs = {k: jax.numpy.asarray(v) for k, v in make_inputs(model.cfg, batch).items()}
    kw = {k: inputs[k] for k in ("cond_img", "mask", "ref_img", "indiv_mels")}
    fwd = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, **kw))
    return flops_of(fwd.lower(params_host, inputs["x"], inputs["t"]).compile())


def _time_train_step(cfg, batch: int):
    import jax
    from common import compile_train_step, timed

    compiled, state, frozen, arrays, mesh, compile_s = compile_train_step(cfg, batch)
    holder = [state]

    def run():
        holder[0], metrics = compiled(holder[0], frozen, arrays)
        jax.block_until_ready(metrics)

    return compiled, timed(run, FLAGS.repeats), mesh, compile_s


def bench_train(cfg, kind: str) -> list[dict]:
    """The five-loss train step at the largest batch (from --train_batch, halving) that fits."""
    import jax
    from common import flops_of, memory_bytes

    batch = FLAGS.train_batch
    while True:
        try:
            compiled, secs, mesh, compile_s = _time_train_step(cfg, batch)
            break
        except Exception as e:  # XlaRuntimeError; its type moves between jax versions
            if not _is_oom(e) or batch <= jax.device_count():
                raise
            print(f"train batch {batch}: out of memory; trying {batch // 2}", file=sys.stderr)
            batch //= 2
    flops = flops_of(compiled)
    stats = jax.local_devices()[0].memory_stats() or {}
    on = [k for k in ("simple", "vb", "l2", "sync", "lpips", "gan") if cfg.loss[k] > 0]
    return [
        dict(
            part="train",
            mode="+".join(on),
            dtype="bfloat16" if cfg.model.use_fp16 else "float32",
            batch=batch,
            fits_requested=batch == FLAGS.train_batch,
            seconds=secs,
            steps_per_second=1 / secs,
            frames_per_second=5 * batch / secs,
            compile_seconds=compile_s,
            mesh=dict(mesh.shape),
            xla_memory_gib=(memory_bytes(compiled) or 0) / 2**30,
            peak_device_memory_gib=stats.get("peak_bytes_in_use", 0) / 2**30 or None,
            **_rate(flops, secs, mesh.devices.size, kind, "bfloat16" if cfg.model.use_fp16 else "float32"),
        )
    ]


def bench_generate(cfg, params_host, sampler_rows: list[dict]) -> list[dict]:
    """generate() on a synthetic clip with a random model; device-idle share from the sampler part."""
    from data_pipelines.synthetic import generate_dataset
    from diff2lip_jax import checkpoint
    from diff2lip_jax.generate import generate

    dtype = FLAGS.dtypes[-1]
    row = next(r for r in sampler_rows if r["dtype"] == dtype)  # the same compiled sampler
    per_batch = row["seconds_per_batch"]
    with tempfile.TemporaryDirectory(prefix="accel_generate_") as tmp:
        manifest = generate_dataset(tmp, num_clips=1, seed=0, size=(256, 256), seconds=FLAGS.generate_seconds)
        entry = manifest["clips"][0]
        model_dir = os.path.join(tmp, "model")
        checkpoint.save_model(model_dir, params_host, cfg.model, meta={"diffusion": cfg.diffusion.to_dict()})
        stats = generate(
            os.path.join(tmp, entry["video"]),
            os.path.join(tmp, entry["audio"]),
            os.path.join(tmp, "out.mp4"),
            checkpoint=model_dir,
            ddim_steps=FLAGS.ddim_steps,
            face_detector="voxceleb2",
            batch_size=row["batch"],
            precision=dtype,
            progress=False,
        )
    busy = stats["batches"] * per_batch
    return [
        dict(
            part="generate",
            mode=f"ddim{FLAGS.ddim_steps}",
            dtype=dtype,
            batch=stats["batch_size"],
            frames=stats["num_frames"],
            seconds=stats["generate_seconds"],
            frames_per_second=stats["frames_per_second"],
            total_seconds=stats["total_seconds"],
            sampler_recompiled=stats["sampler_traces"] > 0,
            device_idle_share=max(0.0, 1 - busy / stats["generate_seconds"]),
        )
    ]


def environment() -> dict:
    import flax
    import jax
    import jaxlib

    device = jax.local_devices()[0]
    return dict(
        device_kind=device.device_kind,
        platform=device.platform,
        local_devices=jax.local_device_count(),
        devices=jax.device_count(),
        jax=jax.__version__,
        jaxlib=jaxlib.__version__,
        flax=flax.__version__,
        python=platform.python_version(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )


def print_table(env: dict, rows: list[dict]) -> None:
    print(
        f"{env['device_kind']} x{env['local_devices']} ({env['platform']}), jax {env['jax']}, "
        f"XLA_FLAGS={env['xla_flags']!r}"
    )
    print(f"{'part':<9}{'mode':<30}{'dtype':<10}{'batch':>6}{'seconds':>9}{'frames/s':>10}{'TFLOP/s':>9}{'MFU':>7}")
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        tflops = f"{r['tflops']:.2f}" if r.get("tflops") is not None else "-"
        print(
            f"{r['part']:<9}{r['mode']:<30}{r['dtype']:<10}{r['batch']:>6}{r['seconds']:>9.3f}"
            f"{r['frames_per_second']:>10.2f}{tflops:>9}{mfu:>7}"
        )
        extra = {
            k: r[k]
            for k in ("peak_device_memory_gib", "xla_memory_gib", "fits_requested", "device_idle_share", "frames")
            if r.get(k) is not None
        }
        if extra:
            print(
                "         "
                + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items())
            )


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.parts) - set(PARTS)) + sorted(set(FLAGS.dtypes) - set(DTYPES))
    if unknown:
        raise app.UsageError(
            f"unknown --parts/--dtypes {unknown}; parts: {','.join(PARTS)}; dtypes: {','.join(DTYPES)}"
        )
    cfg = FLAGS.config
    cfg.lpips.mode = "random"  # same FLOPs as the pretrained VGG16; nothing to download
    cfg.syncnet.checkpoint = ""
    from diff2lip_jax.models import random_params

    env = environment()
    kind = env["device_kind"]
    params_host = random_params(cfg.model, seed=0)  # throughput only: any non-degenerate weights do
    rows: list[dict] = []
    if "unet" in FLAGS.parts:
        rows += bench_unet(cfg, kind)
    sampler_rows = bench_sampler(cfg, kind, params_host) if {"sampler", "generate"} & set(FLAGS.parts) else []
    if "sampler" in FLAGS.parts:
        rows += sampler_rows
    if "train" in FLAGS.parts:
        rows += bench_train(cfg, kind)
    if "generate" in FLAGS.parts:
        rows += bench_generate(cfg, params_host, sampler_rows)
    env["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print_table(env, rows)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            json.dump(dict(environment=env, results=rows), f, indent=1)
        print(f"wrote {FLAGS.json}")


if __name__ == "__main__":
    cli.run_app("accelerator.py", main, doc=__doc__)
