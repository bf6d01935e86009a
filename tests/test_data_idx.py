"""The IDX reader on real Fashion-MNIST files and on small files written here, good and bad."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from interplay.data.idx import IDX_DTYPES, read_idx, read_idx_header
from interplay.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not (FASHION / "train-labels-idx1-ubyte.gz").is_file(),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist",
)
CODES = {dtype.str: code for code, dtype in IDX_DTYPES.items()}


def idx_bytes(values: np.ndarray) -> bytes:
    """An IDX file's bytes, written independently of the reader: magic, dims, big-endian data."""
    big = values.astype(values.dtype.newbyteorder(">"))
    code = CODES[big.dtype.str]
    head = bytes([0, 0, code, values.ndim]) + np.asarray(values.shape, dtype=">u4").tobytes()
    return head + big.tobytes()


def write(path: Path, data: bytes, *, compress: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def raised(path: Path, **kwargs: int) -> str:
    with pytest.raises(DataError) as info:
        read_idx(path, **kwargs)
    # Never a numpy or zlib traceback behind the message.
    assert info.value.__cause__ is None
    message = str(info.value)
    assert str(path) in message
    return message


# ---------------------------------------------------------------- good files


@needs_fashion
def test_read_idx_real_fashion_labels() -> None:
    labels = read_idx(FASHION / "train-labels-idx1-ubyte.gz", ndim=1)
    assert labels.shape == (60000,)
    assert labels.dtype == np.uint8
    # Fashion-MNIST is balanced: 6000 training images per class.
    assert np.bincount(labels).tolist() == [6000] * 10


@needs_fashion
def test_read_idx_real_fashion_images() -> None:
    images = read_idx(FASHION / "t10k-images-idx3-ubyte.gz", ndim=3)
    assert images.shape == (10000, 28, 28)
    assert images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    # Mean intensity of the test images (the train images give the familiar 0.2860).
    assert images.mean() / 255 == pytest.approx(0.2868, abs=5e-4)


@needs_fashion
def test_read_idx_header_real_file_reads_only_header() -> None:
    header = read_idx_header(FASHION / "train-images-idx3-ubyte.gz", ndim=3)
    assert header.shape == (60000, 28, 28)
    assert header.offset == 16
    assert header.payload_bytes == 60000 * 28 * 28


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("dtype", [d.newbyteorder("=") for d in IDX_DTYPES.values()], ids=str)
def test_read_idx_roundtrip_every_type(tmp_path: Path, dtype: np.dtype, compress: bool) -> None:
    values = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    if dtype.kind == "u":
        values = np.arange(30, dtype=dtype).reshape(2, 3, 5)
    path = write(tmp_path / "values.idx", idx_bytes(values), compress=compress)

    got = read_idx(path)

    assert got.dtype == dtype and got.dtype.isnative
    assert got.shape == (2, 3, 5)
    np.testing.assert_array_equal(got, values)
    assert not got.flags.writeable


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    dtype=st.sampled_from(["u1", "i2", "i4", "f8"]),
    seed=st.integers(0, 2**16),
)
def test_read_idx_roundtrip_any_shape(
    tmp_path_factory: pytest.TempPathFactory, shape: list[int], dtype: str, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(shape) * 100).astype(dtype)
    path = write(tmp_path_factory.mktemp("idx") / "v.idx", idx_bytes(values))

    np.testing.assert_array_equal(read_idx(path, ndim=len(shape)), values)


# ---------------------------------------------------------------- bad files


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
def test_read_idx_truncated_payload(tmp_path: Path, compress: bool) -> None:
    data = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))
    path = write(tmp_path / "images.idx", data[:-100], compress=compress)

    message = raised(path)

    assert "truncated" in message and "4x28x28" in message and str(4 * 784 - 100) in message


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.idx", idx_bytes(np.zeros(10, np.uint8)) + b"\x00" * 3)
    assert "3 bytes follow" in raised(path)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x12\x34\x08\x01" + b"\x00" * 8, "two zero bytes, found 12 34"),
        (b"<!DOCTYPE html><html>", "HTML page"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown data type code 0x07"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00", "shorter than the 4-byte magic"),
    ],
    ids=["magic", "html", "type-code", "no-dims", "short"],
)
def test_read_idx_wrong_magic(tmp_path: Path, data: bytes, words: str) -> None:
    assert words in raised(write(tmp_path / "bad.idx", data))


def test_read_idx_unexpected_ndim(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.idx", idx_bytes(np.zeros(10, np.uint8)))
    assert "1 dimensions where 3 are expected" in raised(path, ndim=3)


def test_read_idx_truncated_dims(tmp_path: Path) -> None:
    # Magic says 3 dimensions, but the file ends after the first one.
    path = write(tmp_path / "images.idx", b"\x00\x00\x08\x03" + (60000).to_bytes(4, "big"))
    assert "3 dimensions need 16 header bytes, the file has 8" in raised(path)


def test_read_idx_empty_dimension(tmp_path: Path) -> None:
    data = b"\x00\x00\x08\x02" + (5).to_bytes(4, "big") + (0).to_bytes(4, "big")
    assert "empty dimension" in raised(write(tmp_path / "empty.idx", data))


def test_read_idx_wrong_dims_for_payload(tmp_path: Path) -> None:
    # The header claims 60000 images; the payload holds 10 (a mislabelled or cut file).
    values = np.zeros((10, 28, 28), np.uint8)
    data = bytearray(idx_bytes(values))
    data[4:8] = (60000).to_bytes(4, "big")
    assert "60000x28x28" in raised(write(tmp_path / "images.idx", bytes(data)), ndim=3)


@needs_fashion
def test_read_idx_truncated_gzip_stream(tmp_path: Path) -> None:
    data = (FASHION / "train-labels-idx1-ubyte.gz").read_bytes()
    path = write(tmp_path / "train-labels-idx1-ubyte.gz", data[: len(data) // 2])
    assert "truncated gzip stream" in raised(path, ndim=1)


@needs_fashion
def test_read_idx_corrupt_gzip_stream(tmp_path: Path) -> None:
    data = bytearray((FASHION / "train-labels-idx1-ubyte.gz").read_bytes())
    for i in range(2000, 2100):
        data[i] ^= 0xFF
    path = write(tmp_path / "train-labels-idx1-ubyte.gz", bytes(data))
    assert "corrupt gzip stream" in raised(path, ndim=1)


def test_read_idx_bad_gzip_header(tmp_path: Path) -> None:
    # Gzip's two magic bytes, then nothing like a gzip header.
    path = write(tmp_path / "labels.gz", b"\x1f\x8b" + b"\xff" * 40)
    assert "gzip" in raised(path)


def test_read_idx_missing_file(tmp_path: Path) -> None:
    assert "file not found" in raised(tmp_path / "nowhere.idx")


def test_read_idx_header_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.idx", b"PK\x03\x04zip")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx_header(path)
