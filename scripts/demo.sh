#!/usr/bin/env bash
# `make demo`: the whole system on synthetic data, on CPU, in a few minutes:
# synthesise talking faces -> preprocess into ArrayRecord -> train the tiny SyncNet ->
# train the tiny Diff2Lip -> lip-sync a held-out clip to another clip's audio ->
# metrics table. Everything lands in demo_out/ (training workdir: demo_out/workdir).
#
# Variables (optional): OUT (default demo_out), PY (default .venv/bin), SYNC_STEPS,
# D2L_STEPS, CLIPS (number of synthetic clips).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo_out}
BIN=${PY:-.venv/bin}
SYNC_STEPS=${SYNC_STEPS:-600}
D2L_STEPS=${D2L_STEPS:-200}
CLIPS=${CLIPS:-12}
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/.jax_cache}
start=$(date +%s)
stage() { echo; echo "== [$(( $(date +%s) - start )) s] $*"; }

if [ -e "$OUT/workdir" ]; then
  echo "demo: $OUT/workdir exists from an earlier demo; remove $OUT (or set OUT=...) to run again" >&2
  exit 2
fi
mkdir -p "$OUT"

stage "synthesise $CLIPS talking-face clips"
"$BIN/diff2lip-synth" --out "$OUT/data/raw" --num_clips "$CLIPS" --identities 6 --seconds 3 --size 160 --seed 0

stage "preprocess into ArrayRecord (TFDS), 25 fps face crops + mel"
"$BIN/diff2lip-preprocess" --input "$OUT/data/raw" --out "$OUT/data/prepared" --num_workers 2 --val_fraction 0.2

stage "train the tiny SyncNet expert"
"$BIN/diff2lip-train-syncnet" --config=configs/syncnet.py:tiny --workdir="$OUT/syncnet" \
  --config.data.dir="$OUT/data/prepared" --config.train.num_steps="$SYNC_STEPS"

stage "train the tiny Diff2Lip (five losses; LPIPS with random weights offline)"
"$BIN/diff2lip-train" --config=configs/diff2lip.py:tiny --workdir="$OUT/workdir" \
  --config.data.dir="$OUT/data/prepared" --config.syncnet.checkpoint="$OUT/syncnet" \
  --config.train.num_steps="$D2L_STEPS" --config.train.sample_every="$D2L_STEPS" \
  --config.train.eval_every="$D2L_STEPS" --config.train.checkpoint_every="$D2L_STEPS"

# A held-out (val) clip's video with another clip's audio: the cross setting.
read -r VIDEO AUDIO < <("$BIN/python" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
manifest = json.loads((out / "data/raw/manifest.json").read_text())
clips = manifest["clips"]
print(out / "data/raw" / clips[-1]["video"], out / "data/raw" / clips[0]["audio"])
PY
)
stage "lip-sync $VIDEO to the audio of $AUDIO"
"$BIN/diff2lip-generate" --checkpoint="$OUT/workdir" --video="$VIDEO" --audio="$AUDIO" \
  --out="$OUT/lipsync.mp4" --fig3_strip="$OUT/fig3_strip.png" --ddim_steps=25

stage "metrics"
"$BIN/python" -m diff2lip_jax.evaluate.cli --help >/dev/null
