"""Reading IDX files (the MNIST family's format), plain or gzip-compressed.

An IDX file is a 4-byte magic number (two zero bytes, a data type code, the number of
dimensions), one big-endian uint32 per dimension, then the values, big-endian, row-major.
No maintained library reads it without pulling in a dataset framework, so this is by hand.
Every defect ends as a DataError naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interplay.errors import DataError

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"

# Type code (third byte of the magic number) -> big-endian dtype of the values.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_REPLACE = "replace it with an intact copy (`interplay data --fetch NAME` downloads one)"


class IdxError(DataError):
    """A defect of one IDX file: `problem` says what is wrong, without the file's name."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}; {_REPLACE}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class IdxHeader:
    """What the header of an IDX file promises."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int  # bytes before the first value

    @property
    def count(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def payload_bytes(self) -> int:
        return self.count * self.dtype.itemsize


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read a whole IDX file, checking its header against its payload.

    Args:
        path: The file, plain or gzip-compressed (recognized by content, not by name).
        ndim: The number of dimensions the caller expects (3 for images, 1 for labels);
            a file with another number is refused.

    Returns:
        A read-only array of the file's shape, in native byte order.

    Raises:
        DataError: The file is missing, not IDX, truncated, too long, or a bad gzip stream.
    """
    path = Path(path)
    raw = _read(path, size=None)
    header = _parse_header(raw, path, ndim=ndim)

    got = len(raw) - header.offset
    if got < header.payload_bytes:
        raise IdxError(
            path,
            f"truncated IDX file: its header promises {_describe(header)} "
            f"({header.payload_bytes} bytes) but only {got} bytes follow",
        )
    if got > header.payload_bytes:
        raise IdxError(
            path,
            f"corrupt IDX file: {got - header.payload_bytes} bytes follow the "
            f"{_describe(header)} its header promises",
        )

    values = np.frombuffer(raw, dtype=header.dtype, count=header.count, offset=header.offset)
    if not values.dtype.isnative and values.dtype.itemsize > 1:
        values = values.astype(values.dtype.newbyteorder("="))
        values.flags.writeable = False
    return values.reshape(header.shape)


def read_idx_header(path: str | Path, *, ndim: int | None = None) -> IdxHeader:
    """Read only the header: cheap, even for a compressed file (the payload is not checked).

    Args:
        path: The file, plain or gzip-compressed.
        ndim: The number of dimensions expected, as in `read_idx`.

    Returns:
        The dtype, shape and payload offset the header declares.
    """
    path = Path(path)
    head = _read(path, size=4)
    if len(head) == 4 and head[:2] == b"\x00\x00":
        head = _read(path, size=4 + 4 * head[3])
    return _parse_header(head, path, ndim=ndim)


def _read(path: Path, *, size: int | None) -> bytes:
    """The file's bytes (decompressed when gzip), all of them or the first `size`."""
    try:
        with path.open("rb") as f:
            compressed = f.read(2) == GZIP_MAGIC
            f.seek(0)
            if not compressed:
                return f.read() if size is None else f.read(size)
            with gzip.GzipFile(fileobj=f) as g:
                return g.read() if size is None else g.read(size)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected an IDX file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied; make the file readable") from None
    except EOFError:
        raise IdxError(
            path, "truncated gzip stream (the file ends before the compressed data does)"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise IdxError(path, f"corrupt gzip stream ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e})") from None


def _parse_header(raw: bytes, path: Path, *, ndim: int | None) -> IdxHeader:
    if len(raw) < 4:
        raise IdxError(
            path, f"truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number"
        )
    if raw[:2] != b"\x00\x00":
        hint = " (an HTML page, not data?)" if raw[:1] == b"<" else ""
        raise IdxError(
            path,
            f"not an IDX file: the magic number must start with two zero bytes, "
            f"found {raw[:2].hex(' ')}{hint}",
        )

    code, dims = raw[2], raw[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise IdxError(
            path, f"bad IDX magic number: unknown data type code 0x{code:02X} (known: {known})"
        )
    if dims == 0:
        raise IdxError(path, "bad IDX magic number: 0 dimensions")
    if ndim is not None and dims != ndim:
        raise IdxError(
            path, f"IDX file has {dims} dimensions where {ndim} are expected (the wrong file?)"
        )

    offset = 4 + 4 * dims
    if len(raw) < offset:
        raise IdxError(
            path,
            f"truncated IDX header: {dims} dimensions need {offset} header bytes, "
            f"the file has {len(raw)}",
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    if 0 in shape:
        raise IdxError(path, f"IDX header declares an empty dimension (shape {shape})")
    return IdxHeader(dtype=IDX_DTYPES[code], shape=shape, offset=offset)


def _describe(header: IdxHeader) -> str:
    shape = "x".join(str(d) for d in header.shape)
    return f"{shape} values of type {header.dtype.newbyteorder('=').name}"
