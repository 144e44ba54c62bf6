"""Download AVA's train+val movies: resumable, checked against the server's size, several at a time.

The movies are served by the CVDF bucket as ``https://s3.amazonaws.com/ava-dataset/trainval/<file name>``,
the file names listed in ``https://s3.amazonaws.com/ava-dataset/annotations/ava_file_names_trainval_v2.1.txt``.
A mirror with the same layout can be given instead of the official base URL.

For each file ``NAME`` of the list, into the videos folder:

* a ``HEAD`` request asks the server for the size (``Content-Length``); a ``NAME`` already there with that
  size is kept without fetching anything else;
* otherwise the bytes go to ``NAME.part``. A ``.part`` left by an earlier run (or a shorter ``NAME``, as an
  interrupted ``wget -c`` leaves it) is continued with ``Range: bytes=<size>-``; a server that answers
  ``200`` instead of ``206`` (it ignores ranges) sends the whole file, which then replaces the partial one
  from its first byte;
* the finished ``.part`` must have exactly the size the server announced (``Content-Range``'s total, or
  ``Content-Length``); only then is it renamed to ``NAME`` (``os.replace``: atomic on one file system), so
  ``NAME`` never exists incomplete. A short file stays ``.part``, is reported and retried with growing
  pauses; after the last try it is left for the next run to resume.

Only the standard library is used, so the downloader adds no dependency. Every connection is opened by
``bmvit.hub.open_url``, the one place bmvit reaches the network: with ``BMVIT_OFFLINE`` set, downloads are
refused before any file is touched.

``download_file`` is the one resumable transfer of bmvit: pretrained weights (``bmvit.hub``) use it too,
with two checks of their own (``check_response``: an HTML page instead of a file; ``check_file``: the
sha256 of the finished ``.part``, before it is renamed).
"""

from __future__ import annotations

import http.client
import os
import re
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# bmvit.data.prepare_ava (which imports PyAV and Pillow) is imported where it is needed, so that
# ``bmvit data prepare-ava --help`` can read OFFICIAL_BASE_URL from here without loading them.

PathLike = str | os.PathLike

OFFICIAL_BASE_URL = "https://s3.amazonaws.com/ava-dataset/trainval/"
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20
USER_AGENT = "bmvit-download/1"

Status = Literal["downloaded", "present", "failed"]
LogFn = Callable[[str], None]
ResponseCheck = Callable[[Any], "str | None"]
"""``check(headers) -> reason or None``: refuse an answer before its body is written (the ``.part`` is deleted)."""
FileCheck = Callable[[Path], "str | None"]
"""``check(part) -> reason or None``: refuse a complete ``.part`` before it is renamed (it is deleted)."""


@dataclass
class FileResult:
    """What happened to one file of the list."""

    name: str
    status: Status
    path: str
    size: int = 0  # bytes of the file in place at the end (0 when failed)
    received: int = 0  # bytes received in this run, over all attempts
    resumed_from: int = 0  # bytes already on disk when the successful request started
    attempts: int = 0
    reason: str = ""  # why it failed, or a note for a file kept as it was


@dataclass
class DownloadSummary:
    """What ``download_videos`` did."""

    folder: str
    base_url: str
    workers: int
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def by_status(self, status: Status) -> list[FileResult]:
        return [r for r in self.results if r.status == status]

    @property
    def ok(self) -> bool:
        return not self.by_status("failed")

    def describe(self) -> str:
        downloaded, present, failed = self.by_status("downloaded"), self.by_status("present"), self.by_status("failed")
        received = sum(r.received for r in self.results)
        rate = f" ({human_bytes(received / self.seconds)}/s)" if self.seconds > 0 and received else ""
        lines = [
            f"download into {self.folder} from {self.base_url} ({self.workers} at a time)",
            f"  downloaded:    {len(downloaded)} file(s), {human_bytes(received)} received{rate}",
            f"  already there: {len(present)} file(s)",
            f"  failed:        {len(failed)} file(s)",
        ]
        lines += [f"    {r.name}: {r.reason}" for r in failed]
        lines.append(f"  took {self.seconds:.1f} s")
        return "\n".join(lines)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def part_path(dest: PathLike) -> Path:
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


def file_url(base_url: str, name: str) -> str:
    return base_url.rstrip("/") + "/" + urllib.parse.quote(name)


def check_base_url(base_url: str) -> None:
    """Only HTTP(S): the resume and size checks rely on HTTP's ranges and lengths."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the download URL must be an http:// or https:// address, got {base_url!r}")


def list_url(base_url: str) -> str:
    """Where the bucket layout keeps the list: ``<base>/../annotations/ava_file_names_trainval_v2.1.txt``
    (with the official base, the official list's address)."""
    from bmvit.data.prepare_ava import VIDEO_LIST_NAME

    return urllib.parse.urljoin(base_url.rstrip("/") + "/", "../annotations/" + VIDEO_LIST_NAME)


# ---------------------------------------------------------------------------------------------------------
# one file


class _AttemptFailed(Exception):
    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason, self.retry = reason, retry


class _Stopped(Exception):
    """The run was interrupted: the partial file is kept for the next run."""


class Progress:
    """Thread-safe byte counter over a tqdm bar whose total grows as the servers announce sizes."""

    def __init__(self, bar) -> None:
        self._bar = bar
        self._lock = threading.Lock()
        self._announced: set[str] = set()

    def expect(self, name: str, remaining: int) -> None:
        with self._lock:
            if name not in self._announced:  # a retry resumes what was announced: count it once
                self._announced.add(name)
                self._add_total(remaining)

    def refetch(self, name: str, nbytes: int) -> None:
        """Bytes of ``name`` already counted that come again (a server that ignores ranges)."""
        with self._lock:
            if name in self._announced:
                self._add_total(nbytes)

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._bar.update(nbytes)

    def files(self, finished: int, of: int) -> None:
        """The byte total only grows as files start, so the count of files finished says more."""
        with self._lock:
            self._bar.set_postfix_str(f"{finished}/{of} files")

    def _add_total(self, nbytes: int) -> None:
        self._bar.total = (self._bar.total or 0) + nbytes
        self._bar.refresh()


def _request(url: str, method: str, start: int, timeout_s: float):
    # Every connection goes through bmvit.hub.open_url, which honours BMVIT_OFFLINE.
    from bmvit.hub import open_url

    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return open_url(url, method=method, headers=headers, timeout_s=timeout_s)


def _http_failure(e: urllib.error.HTTPError) -> _AttemptFailed:
    # Server trouble and rate limits pass; a missing or forbidden file stays missing.
    retry = e.code >= 500 or e.code in (408, 425, 429)
    return _AttemptFailed(f"HTTP {e.code} {e.reason}", retry=retry)


def _network_failure(e: BaseException, what: str) -> _AttemptFailed:
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    return _AttemptFailed(f"{what}: {reason or type(e).__name__}", retry=True)


def _remote_size(url: str, timeout_s: float) -> int | None:
    """The size the server announces for ``url`` (``HEAD``), or None when it does not say (no ``HEAD``,
    no ``Content-Length``): the ``GET`` then tells."""
    try:
        with _request(url, "HEAD", 0, timeout_s) as resp:
            length = resp.headers.get("Content-Length")
    except urllib.error.HTTPError as e:
        if e.code in (405, 501):  # HEAD not allowed / not implemented: not a verdict on the file
            return None
        raise _http_failure(e) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        raise _network_failure(e, "cannot reach the server") from None
    return int(length) if length and length.isdigit() else None


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000); unknown parts None."""
    m = _CONTENT_RANGE.match(value or "")
    if m is None:
        return None, None
    first = int(m.group(1)) if m.group(1) else None
    total = int(m.group(3)) if m.group(3) != "*" else None
    return first, total


def download_file(
    url: str,
    dest: PathLike,
    *,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: Progress | None = None,
    log: LogFn | None = None,
    stop: threading.Event | None = None,
    check_response: ResponseCheck | None = None,
    check_file: FileCheck | None = None,
) -> FileResult:
    """Fetch ``url`` into ``dest`` as the module docstring describes; never raises for network trouble.

    A failed attempt that may pass (connection lost, short file, HTTP 5xx/429) is retried up to
    ``retries`` times, waiting ``backoff_s``, then twice that, and so on; a 404 or another 4xx is not.
    A reason returned by ``check_response`` (given the ``GET`` answer's headers) or ``check_file`` (given
    the complete ``.part``) fails the file at once, without a retry, and deletes the ``.part``.
    """
    dest = Path(dest)
    result = FileResult(dest.name, "failed", str(dest))
    stop = stop or threading.Event()
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff_s * 2 ** (attempt - 1)
            if log is not None:
                log(f"retry  {dest.name} in {delay:.1f} s (try {attempt + 1} of {retries + 1}): {result.reason}")
            if stop.wait(delay):
                break
        result.attempts = attempt + 1
        try:
            _attempt(url, dest, result, timeout_s, progress, stop, check_response, check_file)
            result.reason = ""
            return result
        except _AttemptFailed as e:
            result.reason = e.reason
            if not e.retry:
                break
        except _Stopped:
            result.reason = "interrupted"
            break
    result.status = "failed"
    part = part_path(dest)
    if part.exists():
        result.reason += f"; {part.name} ({human_bytes(part.stat().st_size)}) is kept, the next run resumes it"
    return result


def _attempt(url: str, dest: Path, result: FileResult, timeout_s: float, progress: Progress | None,
             stop: threading.Event, check_response: ResponseCheck | None = None,
             check_file: FileCheck | None = None) -> None:
    """One try: sets ``result.status`` on success, raises ``_AttemptFailed`` otherwise.

    ``dest`` is only ever replaced by a checked file: a shorter one (an interrupted ``wget -c``) is moved
    to ``.part`` once the server agrees to send the rest (206), and any other is left in place until the
    file that replaces it is complete.
    """
    part = part_path(dest)
    total = _remote_size(url, timeout_s)
    from_dest = False  # the bytes to continue from are in ``dest``, not in ``.part``
    have = 0
    if dest.exists():
        size = dest.stat().st_size
        if total is not None and size == total:
            part.unlink(missing_ok=True)  # a leftover of an older download: the complete file is there
            result.status, result.size = "present", size
            return
        if total is None or size < total:  # with no HEAD, the GET below tells whether it is complete
            from_dest, have = True, size
    if not from_dest and part.exists():
        have = part.stat().st_size
        if total is not None and have > total:
            part.unlink()
            have = 0
        if total is not None and have == total:  # finished earlier, interrupted before the rename
            _publish(part, dest, result, "downloaded", check_file)
            return
    for _ in range(2):  # a second request only after a refused range, from byte 0
        try:
            resp = _request(url, "GET", have, timeout_s)
        except urllib.error.HTTPError as e:
            with e:
                if e.code == 416 and have:  # the range starts at or past the end of the file
                    _, whole = _parse_content_range(e.headers.get("Content-Range"))
                    if whole == have and from_dest:
                        result.status, result.size = "present", have
                        return
                    if whole == have:
                        _publish(part, dest, result, "downloaded", check_file)
                        return
                    part.unlink(missing_ok=True)  # longer than the server's file: start again
                    from_dest, have = False, 0
                    continue
                raise _http_failure(e) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
            raise _network_failure(e, "cannot reach the server") from None
        with resp:
            _check_answer(resp, part, check_response)
            if from_dest and resp.status == 206:
                os.replace(dest, part)
            elif from_dest:  # a 200 sends the whole file into .part; ``dest`` stays until it is complete
                have = 0
            _receive(resp, part, have, total, result, progress, stop)
        _publish(part, dest, result, "downloaded", check_file)
        return
    raise _AttemptFailed("the server refused every range", retry=True)


def _receive(resp, part: Path, have: int, total: int | None, result: FileResult, progress: Progress | None,
             stop: threading.Event) -> None:
    """Write the body of ``resp`` to ``part`` (appending after a 206) and check the size."""
    if resp.status == 206:
        first, whole = _parse_content_range(resp.headers.get("Content-Range"))
        if first != have:  # not the bytes asked for: appending them would corrupt the file
            part.unlink(missing_ok=True)
            raise _AttemptFailed(f"the server sent bytes from {first} when asked from {have}; restarting",
                                 retry=True)
        expected = whole if whole is not None else total
        mode = "ab"
    elif resp.status == 200:
        if have and progress is not None:
            progress.refetch(result.name, have)
        have = 0  # the server ignores ranges (or none was asked): the whole file comes, from its first byte
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else total
        mode = "wb"
    else:
        raise _AttemptFailed(f"unexpected answer HTTP {resp.status}", retry=True)
    if expected is None:
        raise _AttemptFailed("the server gives no size (no Content-Length): a download could not be checked",
                             retry=False)
    if progress is not None:
        progress.expect(result.name, expected - have)
    result.resumed_from = have
    try:
        f = open(part, mode)
    except OSError as e:
        raise _AttemptFailed(f"cannot write {part}: {e.strerror or e}", retry=False) from None
    with f:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                chunk = resp.read1(CHUNK_BYTES)  # what has arrived: a slow link still sees ``stop`` soon
            except (http.client.HTTPException, OSError) as e:
                raise _network_failure(e, f"connection lost at byte {have}") from None
            if not chunk:  # end of the body, or a connection closed early: the size check tells
                break
            try:
                f.write(chunk)
            except OSError as e:  # a full disk will not pass by waiting
                raise _AttemptFailed(f"cannot write {part}: {e.strerror or e}", retry=False) from None
            have += len(chunk)
            result.received += len(chunk)
            if progress is not None:
                progress.advance(len(chunk))
        f.flush()
        os.fsync(f.fileno())  # the rename must not publish bytes still in the page cache only
    size = part.stat().st_size
    if size != expected:
        raise _AttemptFailed(f"{part.name} has {size} bytes, the server announced {expected}", retry=True)


def _check_answer(resp, part: Path, check: ResponseCheck | None) -> None:
    """Refuse an answer ``check`` rejects (e.g. an HTML page) before a byte of it reaches ``part``."""
    reason = check(resp.headers) if check is not None else None
    if reason:
        part.unlink(missing_ok=True)  # what came before belongs to another answer: nothing to resume
        raise _AttemptFailed(reason, retry=False)


def _publish(part: Path, dest: Path, result: FileResult, status: Status, check: FileCheck | None = None) -> None:
    reason = check(part) if check is not None else None
    if reason:
        part.unlink(missing_ok=True)  # wrong bytes: resuming them would only make a longer wrong file
        raise _AttemptFailed(reason, retry=False)
    os.replace(part, dest)
    result.status, result.size = status, dest.stat().st_size


# ---------------------------------------------------------------------------------------------------------
# a list of files


def _is_plain_name(name: str) -> bool:
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _same_video_elsewhere(folder: Path, name: str) -> str | None:
    """A file of ``folder`` holding the same video under another extension (``x.mp4`` for ``x.mkv``):
    ``prepare-ava`` takes it, so fetching the listed one would only duplicate it."""
    from bmvit.data.prepare_ava import VIDEO_EXTENSIONS, video_id_of

    vid = video_id_of(name)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        ext = os.path.splitext(entry.name)[1].lower()
        if entry.name != name and ext in VIDEO_EXTENSIONS and video_id_of(entry.name) == vid and entry.is_file():
            return entry.name
    return None


def download_videos(
    names: Sequence[str],
    folder: PathLike,
    *,
    base_url: str = OFFICIAL_BASE_URL,
    workers: int = 4,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    log: LogFn | None = None,
) -> DownloadSummary:
    """Fetch every file of ``names`` from ``base_url`` into ``folder``, ``workers`` at a time (threads: the
    work is waiting on the network). A file that fails does not stop the others; Ctrl-C stops all, keeping
    the ``.part`` files for the next run, and raises ``KeyboardInterrupt``."""
    from tqdm import tqdm

    from bmvit.hub import check_online

    if workers < 1:
        raise ValueError(f"download workers must be >= 1, got {workers}")
    check_base_url(base_url)
    check_online(f"downloading {len(names)} video(s) from {base_url}")  # refused before any file is touched
    begin = time.perf_counter()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    summary = DownloadSummary(folder=str(folder), base_url=base_url, workers=workers)
    results: dict[str, FileResult] = {}
    todo = []
    for name in dict.fromkeys(names):
        if not _is_plain_name(name):
            results[name] = FileResult(name, "failed", str(folder / name), reason="not a plain file name")
        elif not (folder / name).exists() and not part_path(folder / name).exists() and (
            other := _same_video_elsewhere(folder, name)
        ):
            results[name] = FileResult(name, "present", str(folder / other), size=(folder / other).stat().st_size,
                                       reason=f"kept as {other} (another extension, not checked against the server)")
        else:
            todo.append(name)
    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, dynamic_ncols=True,
               disable=True if not progress or not todo else None,  # None: shown on a terminal only
               desc=f"download {len(todo)} file(s)")
    counter = Progress(bar)
    stop = threading.Event()

    def one(name: str) -> FileResult:
        return download_file(file_url(base_url, name), folder / name, retries=retries, backoff_s=backoff_s,
                             timeout_s=timeout_s, progress=counter, log=log, stop=stop)

    def say(line: str) -> None:
        if log is not None:
            log(line)
        elif progress:
            bar.write(line)

    pool = ThreadPoolExecutor(max_workers=min(workers, max(1, len(todo))), thread_name_prefix="download")
    futures: dict[Future, str] = {}
    try:
        futures.update({pool.submit(one, name): name for name in todo})
        for finished, future in enumerate(as_completed(futures), 1):
            result = future.result()
            results[result.name] = result
            counter.files(finished, len(todo))
            if result.status == "downloaded":
                resumed = f", resumed at {human_bytes(result.resumed_from)}" if result.resumed_from else ""
                say(f"downloaded {result.name}: {human_bytes(result.size)}{resumed}")
            elif result.status == "failed":
                say(f"FAILED {result.name}: {result.reason}")
    except KeyboardInterrupt:
        stop.set()  # running downloads stop after their current chunk; queued ones are not started
        for future in futures:
            future.cancel()
        raise
    finally:
        pool.shutdown(wait=True)
        bar.close()
    summary.results = [results[name] for name in dict.fromkeys(names)]
    summary.seconds = time.perf_counter() - begin
    return summary


def names_to_download(
    video_list: PathLike | None,
    annotations_dir: PathLike,
    *,
    base_url: str = OFFICIAL_BASE_URL,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    log: LogFn | None = None,
) -> tuple[list[str], Path]:
    """The file names to download and the list they come from: ``video_list``, else
    ``ANN_DIR/ava_file_names_trainval_v2.1.txt``, else the list fetched from the bucket layout
    (:func:`list_url`) into ``ANN_DIR``, where ``prepare-ava`` then finds it as its list of videos.

    Raises ``FileNotFoundError`` (a missing list file or folder) or ``OSError`` (the list cannot be fetched).
    """
    from bmvit.data.prepare_ava import VIDEO_LIST_NAME, read_video_list

    if video_list is not None:
        return read_video_list(video_list), Path(video_list)
    ann = Path(annotations_dir)
    if not ann.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {ann}")
    local = ann / VIDEO_LIST_NAME
    if not local.is_file():
        from bmvit.hub import check_online

        check_base_url(base_url)
        url = list_url(base_url)
        check_online(f"the video list {url}")
        if log is not None:
            log(f"fetching the video list {url} into {ann}")
        got = download_file(url, local, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s, log=log)
        if got.status == "failed":
            raise OSError(f"cannot fetch the video list {url}: {got.reason} (give one with --video-list)")
    return read_video_list(local), local


__all__ = [
    "OFFICIAL_BASE_URL",
    "DownloadSummary",
    "FileResult",
    "Progress",
    "check_base_url",
    "download_file",
    "download_videos",
    "file_url",
    "list_url",
    "names_to_download",
    "part_path",
]
