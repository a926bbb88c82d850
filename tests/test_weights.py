"""The weights registry and diff2lip-weights, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading

import pytest
from helpers import one_line_error, run_module

from diff2lip_jax import weights

PAYLOAD = os.urandom(3 * weights.CHUNK + 123)  # several chunks, not a multiple of one


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.endswith("/truncated.bin"):  # promises the whole file, sends a third, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if self.path.endswith("/missing.bin"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(weights.MIRROR_ENV, raising=False)
    return tmp_path / "cache"


def _weight(url: str, **kw) -> weights.Weight:
    return weights.Weight("test_file", "file.bin", url, "test", "tests", **kw)


def _leftovers(root) -> list:
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_download_verifies_and_lands_atomically(server, cache):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    for kw in ({"sha256": digest}, {"sha256_prefix": digest[:10]}, {}):
        w = _weight(f"{server}/file.bin", **kw)
        got = weights.fetch(w)
        assert got == cache / "test_file" / "file.bin" and got.read_bytes() == PAYLOAD
        assert weights.verify(w) == ("sha256" if "sha256" in kw else "sha256 prefix" if kw else "none")
        assert _leftovers(cache) == ["file.bin"]  # no temporary file beside it
        got.unlink()


def test_checksum_mismatch_is_refused_and_nothing_stays(server, cache):
    for kw in ({"sha256": "0" * 64}, {"sha256_prefix": "619a316812"}):
        with pytest.raises(weights.WeightsError, match="refused"):
            weights.fetch(_weight(f"{server}/file.bin", **kw))
        assert _leftovers(cache) == []


def test_interrupted_download_leaves_nothing(server, cache):
    with pytest.raises(weights.WeightsError, match=r"stopped after \d+ of \d+ bytes|cannot download"):
        weights.fetch(_weight(f"{server}/truncated.bin"))
    assert _leftovers(cache) == []


def test_offline_and_missing_name_the_url_and_the_place(server, cache):
    for url in (f"{server}/missing.bin", "http://127.0.0.1:9/file.bin"):  # 404; nothing listens on port 9
        with pytest.raises(weights.WeightsError) as e:
            weights.fetch(_weight(url), timeout=5)
        assert url in str(e.value) and str(cache / "test_file" / "file.bin") in str(e.value)
    assert _leftovers(cache) == []


def test_mirror_serves_direct_files_by_name(server, cache, monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, server + "/mirror/")
    assert weights.source_url(weights.lookup("s3fd")) == f"{server}/mirror/s3fd-619a316812.pth"


def test_registry_lists_every_external_file():
    names = set(weights.REGISTRY)
    assert {
        "s3fd",
        "fid_inception",
        "lpips_vgg16",
        "lpips_lin",
        "syncnet_python",
        "wav2lip_expert",
        "diff2lip",
    } <= names
    for w in weights.REGISTRY.values():
        assert w.url.startswith(("http://", "https://")) and w.licence and w.used_by
        if w.sha256_prefix:  # the torch.hub convention: the prefix is in the published name
            assert f"-{w.sha256_prefix}." in w.filename


def _cli(*args, env):
    return run_module("diff2lip_jax.weights_cli", *args, timeout=120, env=env)


def test_cli(server, tmp_path):
    env = {**os.environ, weights.CACHE_ENV: str(tmp_path / "c"), weights.MIRROR_ENV: server}
    listing = _cli("list", env=env)
    assert listing.returncode == 0, listing.stderr
    for w in weights.REGISTRY.values():
        assert w.name in listing.stdout and w.url in listing.stdout
    where = _cli("path", "s3fd", env=env)
    assert where.returncode == 0 and where.stdout.strip() == str(tmp_path / "c" / "s3fd" / "s3fd-619a316812.pth")
    # The mirror serves bytes that are not S3FD's: refused, nothing cached.
    line = one_line_error(_cli("fetch", "s3fd", env=env), "diff2lip-weights: error:")
    assert "refused" in line and _leftovers(tmp_path / "c") == []
    assert "Google Drive" in one_line_error(_cli("fetch", "diff2lip", env=env))
    assert "known: s3fd" in one_line_error(_cli("fetch", "s3fd", "nope", env=env))
    assert "choose a command" in one_line_error(_cli("get", env=env))
    # A corrupt file already in the cache is found out by `fetch`.
    bad = tmp_path / "c" / "fid_inception" / "pt_inception-2015-12-05-6726825d.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not inception")
    assert "refused" in one_line_error(_cli("fetch", "fid_inception", env=env))


def test_lpips_finds_its_files_in_the_cache(cache):
    from diff2lip_jax.models import lpips

    assert weights.path("lpips_vgg16").parent == weights.path("lpips_lin").parent == cache / "lpips"
    assert lpips.find_weight_files(cache / "lpips") is None
    for name in ("lpips_vgg16", "lpips_lin"):
        weights.path(name).parent.mkdir(parents=True, exist_ok=True)
        weights.path(name).write_bytes(b"h5")
    expected = (str(cache / "lpips" / lpips.VGG_FILE), str(cache / "lpips" / lpips.LIN_FILE))
    assert lpips.find_weight_files() == expected  # no weights_dir: the project's cache first
    assert lpips.find_weight_files(cache / "lpips") == expected
