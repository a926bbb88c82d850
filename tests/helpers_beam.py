"""Apache Beam for the tests without touching the project's environment.

apache-beam pins older protobuf, pillow and pyarrow than the venv holds
(``pip install --dry-run apache-beam`` would downgrade protobuf 7 -> 6, pillow
13 -> 12, pyarrow 26 -> 25), so it is not installed into the venv. Instead
:func:`beam_overlay` installs exactly what pip would add or change for it
(resolved by ``pip install --dry-run --report``, installed with ``--no-deps
--target``) into a folder of its own; a subprocess with that folder first on
``PYTHONPATH`` sees Beam and its pins, everything else from the venv. The folder
is kept (``$DIFF2LIP_BEAM_OVERLAY``, default ``~/.cache/diff2lip_jax/beam-overlay-<python>``)
and reused while it holds the same pins.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile

SPEC = "apache-beam>=2.53"


def _pins() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp, "report.json")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), SPEC]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
        items = json.loads(report.read_text())["install"]
    return sorted(f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items)


def beam_overlay() -> pathlib.Path:
    """The overlay folder with apache-beam and its pins (built on first use, ~1 minute, ~380 MB)."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    default = pathlib.Path.home() / ".cache" / "diff2lip_jax" / f"beam-overlay-{py}"
    root = pathlib.Path(os.environ.get("DIFF2LIP_BEAM_OVERLAY") or default)
    stamp = root / "PINS.txt"
    pins = _pins()
    if stamp.is_file() and stamp.read_text().split() == pins:
        return root
    target = root / "site"
    target.mkdir(parents=True, exist_ok=True)
    if not pins:  # apache-beam is already in this environment
        stamp.write_text("")
        return root
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade", "--target", str(target), *pins]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1200)
    stamp.write_text("\n".join(pins) + "\n")
    return root


def beam_env(overlay: pathlib.Path) -> dict[str, str]:
    """The environment of a subprocess that imports Beam from the overlay."""
    site = str(overlay / "site")
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": site + (os.pathsep + path if path else "")}
