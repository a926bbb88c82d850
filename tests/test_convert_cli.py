"""`diff2lip-convert import/export` end to end: real .pt files, real orbax checkpoints."""

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from helpers import one_line_error

torch = pytest.importorskip("torch")

BIN = os.path.join(os.path.dirname(sys.executable), "diff2lip-convert")
SMALL_FLAGS = [
    "--config.model.num_channels=32",
    "--config.model.num_res_blocks=1",
    "--config.model.num_head_channels=16",
]


def convert(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small_pt(reference_dir, tmp_path_factory):
    meta = json.loads((reference_dir / "tfg_small_golden.json").read_text())
    sd = {
        k: torch.from_numpy(
            (np.random.default_rng(zlib.crc32(k.encode())).standard_normal(s) * 0.05).astype(np.float32)
        )
        for k, s in meta["state_dict"]
    }
    path = tmp_path_factory.mktemp("pt") / "small.pt"
    torch.save(sd, path)
    return path, sd


@pytest.fixture(scope="module")
def imported(small_pt, tmp_path_factory):
    path, _ = small_pt
    out = tmp_path_factory.mktemp("imp") / "model"
    result = convert("import", "--torch", str(path), "--out", str(out), *SMALL_FLAGS)
    assert result.returncode == 0, result.stderr
    return out


def test_import_then_export_reproduces_tensors_exactly(small_pt, imported, tmp_path):
    _, sd = small_pt
    pt, st = tmp_path / "back.pt", tmp_path / "back.safetensors"
    for out in (pt, st):
        result = convert("export", "--checkpoint", str(imported), "--out", str(out))
        assert result.returncode == 0, result.stderr
    back = torch.load(pt, weights_only=True)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)
    from safetensors.numpy import load_file

    st_back = load_file(st)
    assert all(np.array_equal(st_back[k], sd[k].numpy()) for k in sd)


def test_model_flags_travel_with_the_checkpoint(imported):
    from diff2lip_jax.checkpoint import read_meta

    meta, step = read_meta(str(imported))
    assert step == 0
    assert meta["model"]["num_channels"] == 32 and meta["model"]["num_res_blocks"] == 1


bad = one_line_error  # a user error: exit 2, one line on stderr naming the problem, no traceback


def test_pickled_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    evil = tmp_path / "evil.pt"
    torch.save({"w": Payload()}, evil)
    line = bad(convert("import", "--torch", str(evil), "--out", str(tmp_path / "x")))
    assert "pickled code" in line
    assert not (tmp_path / "ran").exists() and not (tmp_path / "x").exists()


def test_wrong_flags_name_the_mismatch_and_write_nothing(small_pt, tmp_path):
    path, _ = small_pt
    line = bad(convert("import", "--torch", str(path), "--out", str(tmp_path / "y")))  # official flags
    assert "does not match the model flags" in line
    assert not (tmp_path / "y").exists()


def test_existing_outputs_are_never_overwritten(small_pt, imported, tmp_path):
    path, _ = small_pt
    assert "already holds a checkpoint" in bad(
        convert("import", "--torch", str(path), "--out", str(imported), *SMALL_FLAGS)
    )
    target = tmp_path / "mine.pt"
    target.write_bytes(b"user data")
    assert "exists" in bad(convert("export", "--checkpoint", str(imported), "--out", str(target)))
    assert target.read_bytes() == b"user data"


def test_missing_inputs(tmp_path):
    assert "no such file" in bad(convert("import", "--torch", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")))
    assert "no such directory" in bad(
        convert("export", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o.pt"))
    )
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoint" in bad(
        convert("export", "--checkpoint", str(tmp_path / "empty"), "--out", str(tmp_path / "o.pt"))
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    assert "not a readable PyTorch" in bad(convert("import", "--torch", str(junk), "--out", str(tmp_path / "o2")))
