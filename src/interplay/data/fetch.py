"""Downloading an IDX dataset into the user cache, verified by checksum before it is kept.

Only `interplay data --fetch` calls this: loading a study never touches the network.
The mirror is the dataset's official one unless `mirror=` or $INTERPLAY_MIRROR says otherwise
(a local copy, or a server on 127.0.0.1 in the tests).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from interplay.data.idx import IdxError, read_idx
from interplay.data.sources import IDX_DATASETS, cache_dir, locate
from interplay.errors import DataError

logger = logging.getLogger(__name__)

CHUNK = 1 << 20


def fetch(
    name: str,
    *,
    mirror: str | None = None,
    dest: str | Path | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the four files of an IDX dataset and check them before keeping them.

    Without `dest` or `force`, a dataset that loading already finds (e.g. the Debian
    package's copy) is not downloaded again. Files already in the destination with the
    right checksum are never downloaded again.

    Args:
        name: fashion-mnist or mnist.
        mirror: Base URL the file names are appended to; defaults to $INTERPLAY_MIRROR,
            then to the dataset's official mirror.
        dest: Folder to put the files in; defaults to the user cache, where loading looks.
        force: Download into the user cache even when the dataset is found elsewhere.
        timeout: Seconds to wait for the server before giving up.

    Returns:
        The folder holding the dataset's four files.

    Raises:
        DataError: A file could not be downloaded, or its checksum or format is wrong.
    """
    if name not in IDX_DATASETS:
        raise DataError(f"cannot fetch {name!r}: downloadable datasets are {list(IDX_DATASETS)}")
    spec = IDX_DATASETS[name]
    if dest is None and not force:
        try:
            folder, _ = locate(name)
        except DataError:
            pass
        else:
            logger.info("%s: already in %s, nothing to download", name, folder)
            return folder

    base = mirror or os.environ.get("INTERPLAY_MIRROR") or spec.mirror
    folder = Path(dest).expanduser() if dest is not None else cache_dir(name)
    download_files(base, spec.checksums, folder, timeout=timeout)
    logger.info("%s: ready in %s", name, folder)
    return folder


def download_files(
    base_url: str, checksums: Mapping[str, str], dest: Path, *, timeout: float = 60.0
) -> list[Path]:
    """Download each file `base_url/<name>` into dest, keeping it only if it verifies.

    A file is written under a temporary name and renamed once its checksum matches and it
    reads as IDX, so an interrupted or corrupt download never looks like a dataset.

    Args:
        base_url: http(s) or file URL of the folder holding the files.
        checksums: File name -> expected md5 (32 hex digits) or sha256 (64 hex digits).
        dest: Folder the files end in; created if needed.
        timeout: Seconds to wait for the server.

    Returns:
        The paths of the verified files, in the order of `checksums`.
    """
    scheme = urllib.parse.urlsplit(base_url).scheme
    if scheme not in ("http", "https", "file"):
        raise DataError(f"mirror {base_url!r}: use an http://, https:// or file:// URL")
    dest.mkdir(parents=True, exist_ok=True)

    paths = []
    for file_name, expected in checksums.items():
        target = dest / file_name
        if target.is_file() and _digest(target, expected) == expected.lower():
            logger.info("%s: already downloaded and verified", target)
            paths.append(target)
            continue
        url = urllib.parse.urljoin(base_url.rstrip("/") + "/", file_name)
        _download_verified(url, target, expected, timeout=timeout)
        paths.append(target)
    return paths


def _download_verified(url: str, target: Path, expected: str, *, timeout: float) -> None:
    logger.info("downloading %s", url)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = _hasher(expected)
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    while chunk := response.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            except (urllib.error.URLError, OSError) as e:
                raise DataError(f"cannot download {url}: {_reason(e)}") from None

        got = digest.hexdigest()
        if got != expected.lower():
            raise DataError(
                f"checksum mismatch for {url}: expected {digest.name} {expected}, got {got}; "
                f"the download is corrupt or the mirror serves other files. Try again, or "
                f"set INTERPLAY_MIRROR to another mirror"
            )
        try:
            read_idx(tmp)  # a file of the wrong kind with a matching checksum is still refused
        except IdxError as e:
            raise DataError(
                f"{url}: {e.problem}; the mirror does not serve this dataset"
            ) from None
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


class _Digest(Protocol):
    @property
    def name(self) -> str: ...

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def _hasher(expected: str) -> _Digest:
    if len(expected) == 32:
        return hashlib.md5(usedforsecurity=False)
    if len(expected) == 64:
        return hashlib.sha256()
    raise ValueError(f"checksum {expected!r}: give an md5 (32 hex digits) or sha256 (64)")


def _digest(path: Path, expected: str) -> str:
    digest = _hasher(expected)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error)
