"""Weights by name: the records of the files bmvit knows, a local cache, and downloads into it.

A name of ``KNOWN_WEIGHTS`` (``mvitv2_s_16x4.k400``), a record's file name, a path or an ``http(s)://``
address becomes a local file with :func:`resolve`:

1. a file that exists is taken as it is;
2. a record whose file ships with bmvit (``bmvit/assets``) resolves to that file;
3. a record already in the cache, ``$BMVIT_HOME/weights/<file name>`` (``BMVIT_HOME`` defaults to
   ``~/.cache/bmvit``), is used without touching the network;
4. otherwise the record's URL is fetched into the cache: a ``<file name>.part`` that grows (an interrupted
   download resumes with an HTTP ``Range``), the sha256 checked when the record gives one, then an atomic
   rename, so the cache never holds a file that is incomplete or wrong.

An address that is no record's is cached as ``<8 hex digits of the URL's sha256>-<its file name>`` (two
addresses ending in the same file name do not collide); a ``#sha256=<hex>`` fragment gives its digest.

Environment:

* ``BMVIT_OFFLINE=1``: nothing is downloaded; a missing file is an ``OfflineError`` naming the file to
  place and where.
* ``BMVIT_WEIGHTS_MIRROR=https://host/path``: every record is fetched from ``<mirror>/<file name>``
  instead of its own address: a mirror is a flat folder of the files as the cache names them.
* ``BMVIT_HOME``: where the cache lives.

Records whose source is a web page rather than a file (Google Drive) carry ``manual``: the steps to get the
file by hand, which the error prints with the cache path to save it under.

This module imports no torch, so ``bmvit weights list`` and ``download`` start in a blink. Records after
timm's ``PretrainedCfg`` and torchvision's ``WeightsEnum``; the cache after ``torch.hub``'s.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OFFLINE_ENV = "BMVIT_OFFLINE"
"""Set (to anything but empty or 0), bmvit opens no network connection: every download is refused."""
HOME_ENV = "BMVIT_HOME"
"""The folder of bmvit's cache (default ``~/.cache/bmvit``); weights go to its ``weights/`` folder."""
MIRROR_ENV = "BMVIT_WEIGHTS_MIRROR"
"""An ``http(s)://`` folder that holds the records' files by file name, used instead of their own addresses."""
DEFAULT_HOME = "~/.cache/bmvit"

# Weights that ship inside the package; a name of theirs resolves here and never to the cache.
ASSETS_DIR = Path(__file__).resolve().parent / "assets"

Kind = Literal["backbone", "detector"]


# ---------------------------------------------------------------------------------------------------------
# errors


class WeightsError(ValueError):
    """Named weights could not be had: download failed, wrong sha256, a web page instead of a file, ...

    A ``ValueError``, so that every command that reports bad arguments in one line reports these too."""


class OfflineError(WeightsError):
    """A download asked for while ``BMVIT_OFFLINE`` is set."""


class ManualDownloadError(WeightsError):
    """The record's file cannot be fetched by a program (a web page such as Google Drive's)."""


class UnknownWeightsError(FileNotFoundError):
    """Neither an existing file, an address, nor the name of a record."""


# ---------------------------------------------------------------------------------------------------------
# the records


@dataclass(frozen=True)
class WeightsSpec:
    """A pretrained weights file we know of. The license travels with the record.

    ``sha256`` may be a prefix of the digest (torchvision names its files with one). ``kind`` says what the
    file holds: ``"backbone"`` weights (``create_model(..., backbone_weights=NAME)``) or a whole bmvit
    ``"detector"`` (``bmvit.load(NAME)``; its backbone part serves as backbone weights too). ``manual``,
    for a source a program cannot download, holds the steps to get the file by hand.
    """

    name: str  # ``arch.tag``
    file_name: str
    source_format: str
    input_size: tuple[int, int, int]  # (T, H, W) the weights were trained at
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int  # of the source classifier (dropped on load); of the detector for ``kind="detector"``
    license: str
    url: str | None = None
    sha256: str | None = None
    backbone: str = "mvitv2_s"  # the preset these weights fit
    kind: Kind = "backbone"
    dataset: str = ""  # what the weights were trained on, for ``bmvit weights list``
    manual: str | None = None  # the steps to get a file no program can download


_VIDEOMAE_MANUAL = ("open {url} in a browser and download the file (Google Drive shows a page, and asks to confirm "
                    "large files, so no program can fetch it); VideoMAE's MODEL_ZOO.md lists it")

KNOWN_WEIGHTS: dict[str, WeightsSpec] = {
    spec.name: spec
    for spec in (
        WeightsSpec(
            name="mvitv2_s_16x4.k400",
            file_name="MViTv2_S_16x4_k400_f302660347.pyth",
            source_format="slowfast",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="Apache-2.0 (PySlowFast model zoo); trained on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/mvitv2/pysf_video_models/"
            "MViTv2_S_16x4_k400_f302660347.pyth",
            dataset="Kinetics-400",
        ),
        WeightsSpec(
            name="mvitv2_s_16x4.k400_tv",
            file_name="mvit_v2_s-ae3be167.pth",
            source_format="torchvision",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="BSD-3-Clause (torchvision; weights ported from PySlowFast); trained on Kinetics-400",
            url="https://download.pytorch.org/models/mvit_v2_s-ae3be167.pth",
            sha256="ae3be167",
            dataset="Kinetics-400",
        ),
        # VideoMAE publishes its checkpoints on Google Drive without stable file names (MODEL_ZOO.md);
        # save a download under file_name for the record to be recognised. ImageNet mean/std, as
        # VideoMAE's data pipeline normalises.
        WeightsSpec(
            name="vit_b_16x4.videomae_k400_ft_k400",
            file_name="videomae_vit_b_16x4_k400_e1600_ft.pth",
            source_format="videomae",
            input_size=(16, 224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_classes=400,
            license="CC BY-NC 4.0 (VideoMAE); trained on Kinetics-400",
            url="https://drive.google.com/file/d/1MzwteHH-1yuMnFb8vRBQDvngV1Zl-d3z/view",
            backbone="vit_b",
            dataset="Kinetics-400",
            manual=_VIDEOMAE_MANUAL + " as ViT-B, Kinetics-400, 1600 epochs, fine-tuned",
        ),
        WeightsSpec(
            name="vit_b_16x4.videomae_k400",
            file_name="videomae_vit_b_16x4_k400_e1600_pretrain.pth",
            source_format="videomae",
            input_size=(16, 224, 224),
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            num_classes=0,  # MAE pre-training: no classifier; the decoder is dropped on load
            license="CC BY-NC 4.0 (VideoMAE); self-supervised on Kinetics-400",
            url="https://drive.google.com/file/d/1tEhLyskjb755TJ65ptsrafUG2llSwQE1/view",
            backbone="vit_b",
            dataset="Kinetics-400 (self-supervised)",
            manual=_VIDEOMAE_MANUAL + " as ViT-B, Kinetics-400, 1600 epochs, pre-trained",
        ),
        # The hiera package does not state the video mean/std; these are the Kinetics values of
        # PySlowFast and MAE-ST, the recipes Hiera's video training follows (unverified).
        WeightsSpec(
            name="hiera_l_16x224.mae_k400_ft_k400",
            file_name="hiera_large_16x224.pth",
            source_format="hiera",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="CC BY-NC 4.0 (Hiera model zoo; the code is Apache-2.0); trained on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/hiera/hiera_large_16x224.pth",
            backbone="hiera_l",
            dataset="Kinetics-400",
        ),
        WeightsSpec(
            name="hiera_l_16x224.mae_k400",
            file_name="mae_hiera_large_16x224.pth",
            source_format="hiera",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=0,  # MAE pre-training: no classifier; fusion heads and decoder are dropped on load
            license="CC BY-NC 4.0 (Hiera model zoo; the code is Apache-2.0); self-supervised on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/hiera/mae_hiera_large_16x224.pth",
            backbone="hiera_l",
            dataset="Kinetics-400 (self-supervised)",
        ),
        WeightsSpec(
            name="hiera_b_16x224.mae_k400_ft_k400",
            file_name="hiera_base_16x224.pth",
            source_format="hiera",
            input_size=(16, 224, 224),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=400,
            license="CC BY-NC 4.0 (Hiera model zoo; the code is Apache-2.0); trained on Kinetics-400",
            url="https://dl.fbaipublicfiles.com/hiera/hiera_base_16x224.pth",
            backbone="hiera_b",
            dataset="Kinetics-400",
        ),
        # Ours, shipped in bmvit/assets: the whole tiny detector after configs/synthetic_pretrain.yaml's four
        # stages (288 synthetic videos of seed 1, then 288 of seed 2, never the demo's seed-0 videos; 345 min
        # on 2 CPU cores, docs/demo.md#the-pretrained-detector); the demo starts from all of it. The name is
        # from its first stages, on seed 1 only.
        WeightsSpec(
            name="mvit_tiny_8x128.synthetic_seed1",
            file_name="bmvit_mvit_tiny_synthetic_pretrain.safetensors",
            source_format="bmvit",
            input_size=(8, 128, 128),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=9,
            license="Apache-2.0 (bmvit); trained on `bmvit synth --videos 288` videos of seeds 1 and 2",
            sha256="617e6dc8354b2d8d1966a1fd2230d3609b589b6b3395afef5b36502b401eb837",
            backbone="mvit_tiny",
            kind="detector",
            dataset="synthetic, seeds 1 and 2",
        ),
        # Ours, shipped: the demo's detector (the one above fine-tuned by `make demo` on the seed-0 videos),
        # what `bmvit predict` uses when no --weights is given. No sha256: nothing is downloaded.
        WeightsSpec(
            name="mvit_tiny_8x128.synthetic_demo",
            file_name="bmvit_mvit_tiny_synthetic.safetensors",
            source_format="bmvit",
            input_size=(8, 128, 128),
            mean=(0.45, 0.45, 0.45),
            std=(0.225, 0.225, 0.225),
            num_classes=9,
            license="Apache-2.0 (bmvit); trained on `bmvit synth` videos of seeds 1 and 2, then of seed 0",
            backbone="mvit_tiny",
            kind="detector",
            dataset="synthetic, seed 0 (the demo)",
        ),
    )
}


def find_weights(name: str) -> WeightsSpec:
    """The record called ``name``, or whose file name is ``name``.

    Raises:
        UnknownWeightsError: no such record; the message names the closest ones.
    """
    spec = KNOWN_WEIGHTS.get(name) or next((s for s in KNOWN_WEIGHTS.values() if s.file_name == name), None)
    if spec is None:
        raise UnknownWeightsError(f"{name!r} is neither an existing file nor the name of known weights "
                                  f"({suggestion(name)}); `bmvit weights list` shows every name")
    return spec


def suggestion(name: str, kind: Kind | None = None) -> str:
    """The phrase ``did you mean a, b?`` naming the records (of ``kind``) closest to ``name``, or
    ``no name is close``."""
    names = [s.name for s in KNOWN_WEIGHTS.values() if kind is None or s.kind == kind]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f"did you mean {', '.join(close)}?" if close else "no name is close"


# ---------------------------------------------------------------------------------------------------------
# where files are


def bmvit_home() -> Path:
    """``$BMVIT_HOME``, else ``~/.cache/bmvit``."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def weights_dir() -> Path:
    """The cache folder of weights files: ``$BMVIT_HOME/weights``."""
    return bmvit_home() / "weights"


def cache_path(spec: WeightsSpec) -> Path:
    """Where the cache keeps (or would keep) ``spec``'s file."""
    return weights_dir() / spec.file_name


def shipped_path(spec: WeightsSpec, assets_dir: Path | None = None) -> Path | None:
    """The file of ``spec`` inside the package, when it ships there."""
    path = (assets_dir or ASSETS_DIR) / spec.file_name
    return path if path.is_file() else None


def local_path(spec: WeightsSpec, assets_dir: Path | None = None) -> Path | None:
    """``spec``'s file on this machine (shipped, else cached), or None."""
    cached = cache_path(spec)
    return shipped_path(spec, assets_dir) or (cached if cached.is_file() else None)


def url_cache_path(url: str) -> Path:
    """Where the cache keeps the file of an address that is no record's: ``<8 hex>-<its file name>``,
    the prefix from the address (without fragment), so that two sites' ``model.safetensors`` both fit."""
    bare = urllib.parse.urldefrag(url).url
    name = urllib.parse.unquote(Path(urllib.parse.urlsplit(bare).path).name)
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in name).lstrip(".") or "download"
    return weights_dir() / f"{hashlib.sha256(bare.encode()).hexdigest()[:8]}-{name}"


# ---------------------------------------------------------------------------------------------------------
# the network


def is_offline() -> bool:
    """Whether ``BMVIT_OFFLINE`` forbids downloads (set to anything but empty or 0)."""
    return os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0")


def check_online(what: str) -> None:
    """Raise ``OfflineError`` naming ``what`` when ``BMVIT_OFFLINE`` forbids downloads."""
    if is_offline():
        raise OfflineError(f"{OFFLINE_ENV} is set: bmvit downloads nothing, and {what} would need the network "
                           f"(unset {OFFLINE_ENV}, or put the file in place by hand)")


def open_url(url: str, *, method: str = "GET", headers: dict[str, str] | None = None, timeout_s: float = 60.0):
    """The one place bmvit opens a network connection (pretrained weights; the AVA videos and list of
    ``bmvit data prepare-ava --download``), so that ``BMVIT_OFFLINE`` holds for all of them. Returns the
    ``urllib`` response (a context manager); HTTP and network errors are urllib's."""
    check_online(url)
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    return urllib.request.urlopen(request, timeout=timeout_s)


def is_url(text: str) -> bool:
    """Whether ``text`` is an ``http://`` or ``https://`` address."""
    parts = urllib.parse.urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def mirror() -> str | None:
    """``$BMVIT_WEIGHTS_MIRROR`` without a trailing slash, or None; anything but http(s) is an error."""
    value = os.environ.get(MIRROR_ENV, "").strip()
    if not value:
        return None
    if not is_url(value):
        raise WeightsError(f"{MIRROR_ENV} must be an http:// or https:// address, got {value!r}")
    return value.rstrip("/")


def download_url(spec: WeightsSpec) -> str | None:
    """The address ``spec``'s file is fetched from: ``<mirror>/<file name>`` when a mirror is set (for every
    record, manual ones included: the mirror holds the files), else the record's own, else None."""
    base = mirror()
    if base is not None:
        return f"{base}/{urllib.parse.quote(spec.file_name)}"
    return spec.url


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# getting a file


def resolve(name_or_path: str | os.PathLike, *, assets_dir: Path | None = None, progress: bool = True,
            retries: int = 3, backoff_s: float = 2.0, timeout_s: float = 60.0) -> Path:
    """The local file that ``name_or_path`` means, downloaded into the cache if need be.

    An existing path is taken as it is; an ``http(s)://`` address goes through :func:`fetch_url`; a bare
    name (no folder) that is a record's name or file name through :func:`fetch`.

    Raises:
        FileNotFoundError: a path with folders that does not exist.
        UnknownWeightsError: a bare name that is no record's (the closest names are given).
        WeightsError: the file could not be had (``OfflineError``, ``ManualDownloadError`` among them).
    """
    text = os.fspath(name_or_path)
    options = {"progress": progress, "retries": retries, "backoff_s": backoff_s, "timeout_s": timeout_s}
    if Path(text).exists():
        return Path(text)
    if is_url(text):
        return fetch_url(text, **options)
    if "/" in text or os.sep in text:
        known = next((s.name for s in KNOWN_WEIGHTS.values() if s.file_name == Path(text).name), None)
        hint = f"; its file name is that of the record {known!r}: give that name to download it" if known else ""
        raise FileNotFoundError(f"weights file {text!r} does not exist{hint}")
    return fetch(find_weights(text), assets_dir=assets_dir, **options)


def fetch(spec: WeightsSpec, *, assets_dir: Path | None = None, progress: bool = True, retries: int = 3,
          backoff_s: float = 2.0, timeout_s: float = 60.0) -> Path:
    """``spec``'s file: shipped, cached, or downloaded into the cache now (see the module docstring).

    Raises:
        WeightsError: with one line saying why and what to do (``OfflineError``: place the file by hand;
            ``ManualDownloadError``: the steps; a failed transfer: the URL and the reason).
    """
    here = local_path(spec, assets_dir)
    if here is not None:
        return here
    dest = cache_path(spec)
    url = download_url(spec)
    if spec.manual and mirror() is None:
        steps = spec.manual.format(url=spec.url)
        raise ManualDownloadError(f"weights {spec.name!r} cannot be downloaded by bmvit: {steps}; save the file as "
                                  f"{dest} (or set {MIRROR_ENV} to a mirror that holds {spec.file_name})")
    if url is None:
        where = (assets_dir or ASSETS_DIR) / spec.file_name
        raise WeightsError(f"weights {spec.name!r} ship with bmvit but {where} is missing (a partial install?) and "
                           f"they have no download address; put the file at {dest}")
    if is_offline():
        raise OfflineError(f"{OFFLINE_ENV} is set: bmvit downloads nothing, and weights {spec.name!r} are not in the "
                           f"cache: get {url} and save it as {dest} (or unset {OFFLINE_ENV})")
    return _transfer(url, dest, spec.sha256, spec.name, progress=progress, retries=retries, backoff_s=backoff_s,
                     timeout_s=timeout_s)


def fetch_url(url: str, *, progress: bool = True, retries: int = 3, backoff_s: float = 2.0,
              timeout_s: float = 60.0) -> Path:
    """The file at ``url``, from the cache or downloaded into it now.

    The address of a record is cached under the record's file name and checked against its sha256; any
    other under :func:`url_cache_path`, checked against a ``#sha256=<hex>`` fragment when there is one.
    The address is used as given (``BMVIT_WEIGHTS_MIRROR`` replaces records' addresses, not this one).
    """
    bare, fragment = urllib.parse.urldefrag(url)
    spec = next((s for s in KNOWN_WEIGHTS.values() if s.url == bare), None)
    dest = cache_path(spec) if spec is not None else url_cache_path(bare)
    sha256 = spec.sha256 if spec is not None else urllib.parse.parse_qs(fragment).get("sha256", [None])[0]
    if dest.is_file():
        return dest
    if is_offline():
        raise OfflineError(f"{OFFLINE_ENV} is set: bmvit downloads nothing, and {bare} is not in the cache: get it "
                           f"and save it as {dest} (or unset {OFFLINE_ENV})")
    return _transfer(bare, dest, sha256, bare, progress=progress, retries=retries, backoff_s=backoff_s,
                     timeout_s=timeout_s)


def _transfer(url: str, dest: Path, sha256: str | None, what: str, *, progress: bool, retries: int,
              backoff_s: float, timeout_s: float) -> Path:
    """Download ``url`` to ``dest`` with the resumable transfer of ``bmvit.data.download`` (one of its kind
    in bmvit), refusing HTML pages and, when ``sha256`` is given, any other bytes."""
    from tqdm import tqdm

    from bmvit.data.download import Progress, download_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    with _cache_lock(dest.parent):
        if dest.is_file():  # another process finished it while this one waited for the lock
            return dest
        bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr,
                   dynamic_ncols=True, disable=None if progress else True)  # None: shown on a terminal only
        try:
            result = download_file(url, dest, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                                   progress=Progress(bar), log=bar.write if progress else None,
                                   check_response=_refuse_html, check_file=_file_check(sha256))
        finally:
            bar.close()
    if result.status == "failed":
        source = url if what == url else f"{what} from {url}"
        raise WeightsError(f"cannot download {source}: {result.reason}")
    return dest


@contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the cache folder: the ranks of a ``torchrun`` job all ask for the same weights
    at once, and two writers of one ``.part`` would interleave their bytes. A lock on the folder itself leaves
    no lock file behind. Where ``fcntl`` is missing (Windows) there is no lock."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


_HTML_STARTS = (b"<!doctype", b"<html")


def _refuse_html(headers: Any) -> str | None:
    """An HTML page where a weights file was expected: a log-in, consent or 'file moved' page."""
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml"):
        return (f"the server sent a web page ({content_type}), not a weights file: the address is a page "
                "(log-in, consent, a moved file), not the file itself")
    return None


def _file_check(sha256: str | None):
    """The check of a complete download: not HTML by its first bytes, and the expected sha256 if known."""

    def check(part: Path) -> str | None:
        with part.open("rb") as f:
            head = f.read(512).lstrip().lower()
        if head.startswith(_HTML_STARTS):
            return ("the server sent a web page (its first bytes are HTML), not a weights file: the address is a "
                    "page (log-in, consent, a moved file), not the file itself")
        if sha256:
            actual = sha256_of(part)
            if not actual.startswith(sha256.lower()):
                prefix = " (a prefix)" if len(sha256) < 64 else ""
                return (f"its sha256 is {actual}, the record expects {sha256.lower()}{prefix}: the bytes are not the "
                        f"file the record names (the partial file is deleted; the next try starts again)")
        return None

    return check


__all__ = [
    "ASSETS_DIR",
    "HOME_ENV",
    "KNOWN_WEIGHTS",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "ManualDownloadError",
    "OfflineError",
    "UnknownWeightsError",
    "WeightsError",
    "WeightsSpec",
    "bmvit_home",
    "cache_path",
    "check_online",
    "download_url",
    "fetch",
    "fetch_url",
    "find_weights",
    "is_offline",
    "is_url",
    "local_path",
    "mirror",
    "open_url",
    "resolve",
    "sha256_of",
    "shipped_path",
    "suggestion",
    "url_cache_path",
    "weights_dir",
]
