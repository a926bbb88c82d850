"""Inference: a face video + any audio -> a lip-synced mp4 (library and `diff2lip-generate`).

    from diff2lip_jax.generate import generate
    stats = generate("face.mp4", "speech.wav", "out.mp4", checkpoint="workdir", ddim_steps=25)

Modules: `pipeline` (`generate`), `timing` (output frame rate, frame count, mel
windows), `frames` (streaming face pass, ping-pong order, frame cache), `lipsync`
(pass 2: batching, sampling, paste-back, in order), `paste` (feather / full / lower),
`model` (checkpoint loading, the compiled sharded sampler), `strip` (the Fig. 3 PNG),
`side_by_side`, `cli` (the console script, `run`).
"""

from diff2lip_jax.generate.cli import run
from diff2lip_jax.generate.frames import pingpong_source
from diff2lip_jax.generate.model import load_checkpoint, sampler_traces
from diff2lip_jax.generate.pipeline import MODES, generate

__all__ = ["MODES", "generate", "load_checkpoint", "pingpong_source", "run", "sampler_traces"]
