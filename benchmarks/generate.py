"""Long videos in bounded memory: peak RSS of `generate` over a 10-minute 640x480 video.

    python benchmarks/generate.py                      # 10 min, 640x480, tiny random model, DDIM 2
    python benchmarks/generate.py --minutes=2 --pingpong_video_seconds=20 --json=mem.json

Builds a synthetic 25 fps talking-face clip (--base_seconds), loops it with ffmpeg's
stream copy to --minutes of video and audio, and lip-syncs it with a random tiny model
(`configs/diff2lip.py:tiny`, --ddim_steps) in a child process, while this process samples
the resident memory (RSS) of the child and its ffmpeg decoders/encoders every
--interval seconds. Reports peak RSS over the first 1, 5 and 10 minutes of output video
(time in the lip-sync pass maps to output position at the pass's mean rate) and the
growth from the first to the last minute, which must be ~0: frames stream from the
decoder to the encoder.

Second run, ping-pong: a --pingpong_video_seconds video with the full-length audio, so
the output plays the video back and forth through the on-disk frame cache
(`generate.frames.FrameCache`, lossless FFV1 segments); reports that run's peak RSS and
the cache folder's peak size, sampled the same way (it is bounded by the video's length,
not the audio's).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
flags.DEFINE_float("minutes", 10.0, "length of the long video and audio")
flags.DEFINE_string("size", "640x480", "frame size WxH")
flags.DEFINE_float("base_seconds", 20.0, "synthetic clip that is looped to --minutes")
flags.DEFINE_float("pingpong_video_seconds", 60.0, "video length of the ping-pong run (0: skip it)")
flags.DEFINE_integer("ddim_steps", 2, "DDIM steps (the tiny model: memory, not quality, is measured)")
flags.DEFINE_float("interval", 0.5, "seconds between RSS samples")
flags.DEFINE_string("json", None, "also write the results here")
flags.DEFINE_string("child", None, "internal: run generate with this JSON argument file and exit")
FLAGS = flags.FLAGS


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (the ffmpeg pipes count)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _folder_bytes(root: pathlib.Path, pattern: str) -> int:
    total = 0
    for folder in root.glob(pattern):
        for dirpath, _, files in os.walk(folder):
            for name in files:
                try:
                    total += os.path.getsize(os.path.join(dirpath, name))
                except OSError:
                    pass
    return total


def run_child(args: dict, out_dir: pathlib.Path) -> dict:
    """Runs generate in a child process; returns its stats and the sampled (t, rss, cache bytes)."""
    arg_file = out_dir / f"args_{len(list(out_dir.glob('args_*')))}.json"
    arg_file.write_text(json.dumps(args))
    env = dict(os.environ, DIFF2LIP_COMPILATION_CACHE="0")
    child = subprocess.Popen([sys.executable, __file__, f"--child={arg_file}"], env=env)
    samples = []
    start = time.perf_counter()
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            cache = _folder_bytes(pathlib.Path(args["out"]).parent, ".*.frames")
            samples.append((time.perf_counter() - start, _tree_rss(child.pid), cache))
            stop.wait(FLAGS.interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = child.wait()
    stop.set()
    thread.join()
    if code != 0:
        raise RuntimeError(f"generate child exited with {code}")
    stats = json.loads(pathlib.Path(args["out"] + ".stats.json").read_text())
    return dict(stats=stats, samples=samples, wall=time.perf_counter() - start)


def child_main(arg_file: str) -> None:
    from absl import logging

    from diff2lip_jax.generate import generate

    logging.set_verbosity(logging.WARNING)  # orbax's restore logs

    args = json.loads(pathlib.Path(arg_file).read_text())
    stats = generate(**args)
    pathlib.Path(args["out"] + ".stats.json").write_text(json.dumps(stats, default=str))


def _loop(src: pathlib.Path, dst: pathlib.Path, seconds: float) -> None:
    from diff2lip_jax.video import ffmpeg_exe

    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(src), "-t", f"{seconds:.3f}"]
    subprocess.run([*cmd, "-c", "copy", str(dst)], check=True)


def peaks_by_minute(run: dict, minutes: float) -> dict:
    """Peak RSS (GiB) over the first 1, 5, 10 (..) minutes of output video, from the samples."""
    stats, samples = run["stats"], run["samples"]
    pass2 = stats["generate_seconds"]
    pass2_start = run["wall"] - pass2  # the lip-sync pass is the child's last work (exit takes ~0.1 s)
    out = {}
    for m in [m for m in (1, 5, 10) if m <= minutes] + ([minutes] if minutes not in (1, 5, 10) else []):
        until = pass2_start + pass2 * m / minutes
        rss = [r for t, r, _ in samples if t <= until]
        out[f"{m:g} min"] = max(rss) / 2**30 if rss else None
    first = [r for t, r, _ in samples if pass2_start + pass2 * 0.05 <= t <= pass2_start + pass2 / minutes]
    last = [r for t, r, _ in samples if t >= pass2_start + pass2 * (1 - 1 / minutes)]
    growth = (max(last) - max(first)) / 2**30 if first and last else None
    return dict(peak_rss_gib=out, growth_first_to_last_minute_gib=growth)


def main(argv):
    del argv
    if FLAGS.child:
        child_main(FLAGS.child)
        return
    from data_pipelines.synthetic import generate_dataset
    from diff2lip_jax import checkpoint
    from diff2lip_jax.generate.model import load_config
    from diff2lip_jax.models import random_params

    width, height = (int(v) for v in FLAGS.size.lower().split("x"))
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        tmp = pathlib.Path(tmp)
        t0 = time.perf_counter()
        manifest = generate_dataset(tmp / "base", 1, seed=0, size=(width, height), seconds=FLAGS.base_seconds)
        entry = manifest["clips"][0]
        base_video, base_audio = tmp / "base" / entry["video"], tmp / "base" / entry["audio"]
        seconds = FLAGS.minutes * 60
        long_video, long_audio = tmp / "long.mp4", tmp / f"long{base_audio.suffix}"
        _loop(base_video, long_video, seconds)
        _loop(base_audio, long_audio, seconds)
        print(f"inputs: {FLAGS.minutes:g} min {width}x{height} in {time.perf_counter() - t0:.0f} s", flush=True)
        cfg = load_config(f"{REPO / 'configs' / 'diff2lip.py'}:tiny")
        params = random_params(cfg.model, seed=0)
        checkpoint.save_model(str(tmp / "model"), params, cfg.model, meta={"diffusion": cfg.diffusion.to_dict()})
        common = dict(checkpoint=str(tmp / "model"), ddim_steps=FLAGS.ddim_steps, face_detector="voxceleb2")
        common.update(progress=False, batch_size=32)
        (tmp / "out").mkdir()
        run = run_child(
            dict(common, video=str(long_video), audio=str(long_audio), out=str(tmp / "out" / "long.mp4")), tmp
        )
        results["long"] = dict(
            minutes=FLAGS.minutes,
            frames=run["stats"]["num_frames"],
            frames_per_second=run["stats"]["frames_per_second"],
            wall_seconds=run["wall"],
            **peaks_by_minute(run, FLAGS.minutes),
        )
        print(json.dumps(results["long"], indent=1), flush=True)
        if FLAGS.pingpong_video_seconds > 0:
            short = tmp / "short.mp4"
            _loop(base_video, short, FLAGS.pingpong_video_seconds)
            out = tmp / "out2" / "pingpong.mp4"
            out.parent.mkdir()
            run = run_child(dict(common, video=str(short), audio=str(long_audio), out=str(out)), tmp)
            results["pingpong"] = dict(
                video_seconds=FLAGS.pingpong_video_seconds,
                audio_minutes=FLAGS.minutes,
                frames=run["stats"]["num_frames"],
                pingpong=run["stats"]["pingpong"],
                peak_rss_gib=max(r for _, r, _ in run["samples"]) / 2**30,
                peak_cache_mib=max(c for _, _, c in run["samples"]) / 2**20,
                cache_mib_per_video_minute=max(c for _, _, c in run["samples"])
                / 2**20
                / (FLAGS.pingpong_video_seconds / 60),
                wall_seconds=run["wall"],
            )
            print(json.dumps(results["pingpong"], indent=1), flush=True)
    if FLAGS.json:
        pathlib.Path(FLAGS.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    app.run(main)
