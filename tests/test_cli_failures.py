"""Bad input to the console scripts (all but the trainers): one line, non-zero exit, nothing left or changed.

Each case runs the real console script in a subprocess and checks: the exit code,
exactly one stderr line that names the argument, no traceback, and a listing of
the files involved (names, sizes, mtimes, hashes) equal before and after. The
Ctrl-C cases send SIGINT once the command has started work and expect
`prog: interrupted`, exit 130 and no partial output.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

BIN = os.path.dirname(sys.executable)
BOX = ["--face_detector=box", "--box=0,64,0,64"]


def cmd(name: str, *args: str) -> list[str]:
    return [os.path.join(BIN, name), *map(str, args)]


def run(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd(name, *args), capture_output=True, text=True, timeout=timeout)


def snapshot(*roots: pathlib.Path) -> dict[str, tuple]:
    """Every file and folder under `roots`: (size, mtime_ns, sha1) or "dir"."""
    out: dict[str, tuple] = {}
    for root in roots:
        if not root.exists():
            out[str(root)] = ("absent",)
            continue
        paths = [root, *root.rglob("*")] if root.is_dir() else [root]
        for p in paths:
            if p.is_dir():
                out[str(p)] = ("dir",)
            else:
                st = p.stat()
                out[str(p)] = (st.st_size, st.st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
    return out


def one_line_error(result: subprocess.CompletedProcess, prog: str, names: str, code: int = 2) -> str:
    """Exactly one error line naming `names` (progress lines `[k/n] ...` of the work done may precede it)."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not re.match(r"\[\d+/\d+\] ", line)]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    assert names in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> pathlib.Path:
    """Two synthetic clips, 1 s at 64 px, two speakers."""
    out = tmp_path_factory.mktemp("synth") / "clips"
    r = run("diff2lip-synth", "--out", out, "--num_clips=2", "--seconds=1", "--size=64", "--identities=2")
    assert r.returncode == 0, r.stderr
    return out


# ---------------------------------------------------------------- diff2lip-synth


@pytest.mark.parametrize(
    "args, names",
    [
        ([], "--out"),
        (["--out={file}"], "--out"),
        (["--out={tmp}/o", "--size=65"], "--size"),
        (["--out={tmp}/o", "--num_clips=0"], "--num_clips"),
        (["--out={tmp}/o", "--seconds=-1"], "--seconds"),
        (["--out={tmp}/o", "--audio_format=ogg"], "--audio_format"),
        (["--out={tmp}/o", "--num_clips=two"], "--num_clips"),
        (["--out={file}/sub"], "--out"),
    ],
)
def test_synth_bad_input(tmp_path, args, names):
    file = tmp_path / "a_file"
    file.write_text("keep me")
    before = snapshot(tmp_path)
    r = run("diff2lip-synth", *(a.format(file=file, tmp=tmp_path) for a in args))
    one_line_error(r, "diff2lip-synth", names)
    assert snapshot(tmp_path) == before


def _interrupt(argv: list[str], started, timeout: float = 240) -> subprocess.CompletedProcess:
    """Starts `argv`, waits until `started(line_of_stdout)` is true, sends SIGINT."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    for line in proc.stdout:
        if started(line):
            break
        assert time.monotonic() < deadline, "the command never started work"
    else:
        pytest.fail(f"the command ended before it was interrupted: {proc.wait()} {proc.stderr.read()}")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def interrupted(result: subprocess.CompletedProcess, prog: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 130, (result.returncode, result.stderr)
    assert lines == [f"{prog}: interrupted"], result.stderr


def test_synth_ctrl_c_leaves_out_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    before = snapshot(out)
    r = _interrupt(
        cmd("diff2lip-synth", "--out", out, "--num_clips=40", "--seconds=1", "--size=64"),
        lambda line: line.startswith("[1/40]"),
    )
    interrupted(r, "diff2lip-synth")
    assert snapshot(out) == before  # no clip, no staging folder, no manifest


def test_synth_ctrl_c_removes_the_out_it_created(tmp_path):
    out = tmp_path / "new" / "out"
    r = _interrupt(
        cmd("diff2lip-synth", "--out", out, "--num_clips=40", "--seconds=1", "--size=64"),
        lambda line: line.startswith("[1/40]"),
    )
    interrupted(r, "diff2lip-synth")
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- diff2lip-preprocess


@pytest.fixture(scope="module")
def prepared(clips, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("prep") / "ds"
    r = run("diff2lip-preprocess", "--input", clips, "--out", out, "--num_workers=0", "--split=train", *BOX)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize(
    "args, names",
    [
        (["--out={tmp}/o"], "--input"),
        (["--input={clips}"], "--out"),
        (["--input={tmp}/nothing_here", "--out={tmp}/o"], "--input"),
        (["--input={empty}", "--out={tmp}/o"], "--input"),
        (["--input={clips}", "--out={file}"], "--out"),
        (["--input={clips}", "--out={tmp}/o", "--jpeg_quality=0"], "--jpeg_quality"),
        (["--input={clips}", "--out={tmp}/o", "--box=1,2"], "--box"),
        (["--input={clips}", "--out={tmp}/o", "--num_workers=x"], "--num_workers"),
        (["--input={clips}", "--out={tmp}/o", "--face_detector=s3fd"], "--s3fd_weights"),
    ],
)
def test_preprocess_bad_input(tmp_path, clips, args, names):
    file = tmp_path / "a_file"
    file.write_text("keep me")
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(tmp_path, clips)
    fmt = dict(file=file, tmp=tmp_path, clips=clips, empty=empty)
    r = run("diff2lip-preprocess", *(a.format(**fmt) for a in args), "--num_workers=0")
    one_line_error(r, "diff2lip-preprocess", names)
    assert snapshot(tmp_path, clips) == before


def test_preprocess_non_video_clips_fail_without_a_dataset(tmp_path):
    src = tmp_path / "src" / "spk"
    src.mkdir(parents=True)
    (src / "notes.mp4").write_text("not a video")
    out = tmp_path / "out"
    r = run("diff2lip-preprocess", "--input", src.parent, "--out", out, "--num_workers=0", *BOX)
    line = one_line_error(r, "diff2lip-preprocess", "notes.mp4")
    assert "could be processed" in line
    assert not list(out.glob("*/*/dataset_info.json"))


def test_preprocess_refuses_to_replace_a_dataset_of_other_clips(tmp_path, clips, prepared):
    other = tmp_path / "other" / "spk"
    other.mkdir(parents=True)
    shutil.copy(next(clips.rglob("*.mp4")), other / "new_clip.mp4")
    before = snapshot(prepared)
    r = run("diff2lip-preprocess", "--input", other.parent, "--out", prepared, "--num_workers=0", *BOX)
    line = one_line_error(r, "diff2lip-preprocess", "--out")
    assert "holds a dataset of 2 clips" in line and "--overwrite" in line
    assert snapshot(prepared) == before


def test_preprocess_rerun_over_the_same_input_resumes(clips, prepared):
    r = run("diff2lip-preprocess", "--input", clips, "--out", prepared, "--num_workers=0", "--split=train", *BOX)
    assert r.returncode == 0, r.stderr
    assert "2 clips ok (0 new, 2 reused)" in r.stdout


@pytest.mark.slow
def test_preprocess_ctrl_c_leaves_no_dataset(tmp_path):
    src = tmp_path / "src"
    r = run("diff2lip-synth", "--out", src, "--num_clips=12", "--seconds=1", "--size=64")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out"
    r = _interrupt(
        cmd("diff2lip-preprocess", "--input", src, "--out", out, "--num_workers=1", *BOX),
        lambda line: "to process" in line,
    )
    interrupted(r, "diff2lip-preprocess")
    assert not list(out.glob("*/*/dataset_info.json"))
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.failed.json"))
    assert not list(out.glob("*/*incomplete*")) and not list(out.glob("*/*/*incomplete*"))


# ---------------------------------------------------------------- diff2lip-evaluate


@pytest.fixture(scope="module")
def generated(clips, tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """A filelist of one reconstruction pair and its 'generated' video (the source itself)."""
    root = tmp_path_factory.mktemp("eval")
    video = sorted(clips.rglob("*.mp4"))[0].relative_to(clips).with_suffix("").as_posix()
    gen = root / "gen"
    gen.mkdir()
    name = video.replace("/", ".")
    shutil.copy(clips / f"{video}.mp4", gen / f"{name}_{name}.mp4")
    filelist = root / "test.txt"
    filelist.write_text(f"{video} {video}\n")
    return filelist, gen


EVAL = ["--mode=reconstruction", "--metrics=psnr,ssim", *BOX]


@pytest.mark.parametrize(
    "args, names",
    [
        (["--out={existing}"], "--out"),
        (["--out={tmp}/r.json", "--table={existing}"], "--table"),
        (["--out={tmp}"], "--out"),
        (["--out={file}/r.json"], "--out"),
        (["--source_dir={tmp}/wrong", "--out={tmp}/r.json"], "--source_dir"),
        (["--source_dir={file}", "--out={tmp}/r.json"], "--source_dir"),
        (["--source_dir={tmp}", "--out={tmp}/r.json"], "--source_dir"),
        (["--generated_dir={tmp}", "--out={tmp}/r.json"], "--generated_dir"),
        (["--out={tmp}/r.json", "--max_pairs=0"], "--max_pairs"),
    ],
)
def test_evaluate_bad_input(tmp_path, clips, generated, args, names):
    filelist, gen = generated
    file = tmp_path / "a_file"
    file.write_text("keep me")
    existing = tmp_path / "results.json"
    existing.write_text('{"mine": 1}\n')
    existing.with_suffix(".md").write_text("my table\n")
    before = snapshot(tmp_path, gen)
    given = [a.format(tmp=tmp_path, file=file, existing=existing) for a in args]
    base = [f"--filelist={filelist}", f"--generated_dir={gen}", f"--source_dir={clips}"]
    r = run("diff2lip-evaluate", *base, *EVAL, *given)  # later flags win
    one_line_error(r, "diff2lip-evaluate", names)
    assert snapshot(tmp_path, gen) == before


def test_evaluate_overwrite_replaces_both_outputs(tmp_path, clips, generated):
    filelist, gen = generated
    out = tmp_path / "results.json"
    out.write_text("{}\n")
    out.with_suffix(".md").write_text("old\n")
    base = [f"--filelist={filelist}", f"--generated_dir={gen}", f"--source_dir={clips}", f"--out={out}"]
    r = run("diff2lip-evaluate", *base, *EVAL, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["num_evaluated"] == 1
    assert out.with_suffix(".md").read_text() != "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json", "results.md"]


# ---------------------------------------------------------------- diff2lip-convert


@pytest.mark.parametrize(
    "args, names",
    [
        ([], "usage"),
        (["import", "--out={tmp}/m"], "--torch"),
        (["import", "--torch={tmp}/missing.pt", "--out={tmp}/m"], "--torch"),
        (["import", "--torch={tmp}", "--out={tmp}/m"], "--torch"),
        (["import", "--torch={text}", "--out={tmp}/m"], "--torch"),
        (["export", "--checkpoint={tmp}/nothing", "--out={tmp}/x.pt"], "--checkpoint"),
        (["export", "--checkpoint={text}", "--out={tmp}/x.pt"], "--checkpoint"),
        (["export", "--checkpoint={tmp}", "--out={tmp}/x.pt"], "checkpoint"),
    ],
)
def test_convert_bad_input(tmp_path, args, names):
    text = tmp_path / "weights.safetensors"
    text.write_text("not safetensors\n")
    before = snapshot(tmp_path)
    r = run("diff2lip-convert", *(a.format(tmp=tmp_path, text=text) for a in args))
    one_line_error(r, "diff2lip-convert", names)
    assert snapshot(tmp_path) == before


SMALL = ["--config.model.num_channels=32", "--config.model.num_res_blocks=1", "--config.model.num_head_channels=16"]


@pytest.fixture(scope="module")
def small_model(reference_dir, tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    """(a small official-layout .pt, its import as a model directory)."""
    torch = pytest.importorskip("torch")
    meta = json.loads((reference_dir / "tfg_small_golden.json").read_text())
    sd = {
        k: torch.from_numpy(
            (np.random.default_rng(zlib.crc32(k.encode())).standard_normal(s) * 0.05).astype(np.float32)
        )
        for k, s in meta["state_dict"]
    }
    root = tmp_path_factory.mktemp("convert")
    pt = root / "small.pt"
    torch.save(sd, pt)
    model = root / "model"
    r = run("diff2lip-convert", "import", "--torch", pt, "--out", model, *SMALL)
    assert r.returncode == 0, r.stderr
    return pt, model


def _damage(model: pathlib.Path, how: str, where: pathlib.Path) -> pathlib.Path:
    copy = where / f"model_{how}"
    shutil.copytree(model, copy)
    step = copy / "checkpoints" / "0"
    if how == "truncated":
        for f in (step / "params").rglob("*"):
            if f.is_file() and f.stat().st_size > 100 and "METADATA" not in f.name:
                with open(f, "r+b") as fh:
                    fh.truncate(50)
    elif how == "no_params":
        shutil.rmtree(step / "params")
    elif how == "no_meta":
        shutil.rmtree(step / "meta")
    elif how == "syncnet":
        path = step / "meta" / "metadata"
        meta = json.loads(path.read_text())
        del meta["model"]
        meta.update(kind="syncnet", syncnet={}, image_size=128)
        path.write_text(json.dumps(meta))
    return copy


@pytest.mark.slow
@pytest.mark.parametrize(
    "how, expected",
    [
        ("truncated", "step folder"),
        ("no_params", "step folder"),
        ("no_meta", "step folder"),
        ("syncnet", "is a SyncNet workdir"),
    ],
)
def test_convert_export_of_a_bad_model_dir(tmp_path, small_model, how, expected):
    _, model = small_model
    bad = _damage(model, how, tmp_path)
    before = snapshot(tmp_path)
    r = run("diff2lip-convert", "export", "--checkpoint", bad, "--out", tmp_path / "x.pt")
    line = one_line_error(r, "diff2lip-convert", "--checkpoint")
    assert expected in line
    assert "Event loop is closed" not in r.stderr
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_convert_import_with_flags_that_build_no_model(tmp_path, small_model):
    pt, _ = small_model
    r = run(
        "diff2lip-convert", "import", "--torch", pt, "--out", tmp_path / "m", *SMALL, "--config.model.num_channels=48"
    )
    line = one_line_error(r, "diff2lip-convert", "--config.model")
    assert "num_channels=48" in line
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- --help


@pytest.mark.parametrize(
    "name, flags",
    [
        ("diff2lip-train", ["--config", "--workdir"]),
        ("diff2lip-train-syncnet", ["--config", "--workdir"]),
        ("diff2lip-convert", ["--torch", "--out", "--checkpoint", "--step", "--overwrite", "--config"]),
        ("diff2lip-synth", ["--out", "--num_clips", "--size"]),
        ("diff2lip-preprocess", ["--input", "--out", "--overwrite", "--face_detector"]),
        ("diff2lip-evaluate", ["--filelist", "--out", "--overwrite", "--table"]),
        ("diff2lip-generate", ["--"]),
    ],
)
def test_help_lists_the_commands_flags(name, flags):
    r = run(name, "--help", timeout=120)
    assert r.returncode == 0, r.stderr
    listed = {line.split(":")[0].strip().replace("--[no]", "--") for line in r.stdout.splitlines()}
    for flag in flags:
        assert any(item == flag or (flag == "--" and item.startswith("--")) for item in listed), (flag, r.stdout)
