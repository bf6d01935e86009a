"""Datasets on real data: lookup order, splits and normalization, digits, folders, fetching."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import logging
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interplay.config import DataConfig
from interplay.data import (
    FASHION_CLASSES,
    IDX_DATASETS,
    cache_dir,
    candidate_dirs,
    describe,
    download_files,
    fetch,
    load_data,
    read_idx,
)
from interplay.errors import DataError

FASHION = Path("/usr/share/datasets/fashion-mnist")
FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
needs_fashion = pytest.mark.skipif(
    not all((FASHION / f).is_file() for f in FILES),
    reason="Fashion-MNIST missing: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never see the user's own data folders, cache or mirror."""
    monkeypatch.delenv("INTERPLAY_DATA", raising=False)
    monkeypatch.delenv("INTERPLAY_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture
def no_system_copy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Pretend no Debian package is installed: the system folders point at an empty place."""
    for name, spec in IDX_DATASETS.items():
        moved = dataclasses.replace(spec, system_dirs=(tmp_path / "no-system" / name,))
        monkeypatch.setitem(IDX_DATASETS, name, moved)


def write_idx(path: Path, values: np.ndarray) -> None:
    head = bytes([0, 0, 0x08, values.ndim]) + np.asarray(values.shape, ">u4").tobytes()
    path.write_bytes(head + values.astype(np.uint8).tobytes())


def small_fashion(folder: Path, n_train: int, n_test: int) -> Path:
    """An uncompressed IDX copy of the first images of real Fashion-MNIST."""
    folder.mkdir(parents=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        images = read_idx(FASHION / f"{part}-images-idx3-ubyte.gz")[:n]
        labels = read_idx(FASHION / f"{part}-labels-idx1-ubyte.gz")[:n]
        write_idx(folder / f"{part}-images-idx3-ubyte", images)
        write_idx(folder / f"{part}-labels-idx1-ubyte", labels)
    return folder


# ---------------------------------------------------------------- load_data on Fashion-MNIST


@needs_fashion
def test_load_data_subset_stratified_and_disjoint() -> None:
    cfg = DataConfig(subset=50, val_fraction=0.2, split_seed=3)
    splits = load_data(cfg)

    assert splits.name == "fashion-mnist" and splits.source == str(FASHION)
    assert splits.classes == FASHION_CLASSES and splits.classes[0] == "T-shirt/top"
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert splits.train_x.shape == (400, 1, 28, 28) and splits.val_x.shape == (100, 1, 28, 28)
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    assert splits.test_x is None and splits.test_y is None

    both = torch.cat([splits.train_y, splits.val_y])
    assert torch.bincount(both).tolist() == [50] * 10
    assert torch.bincount(splits.val_y).tolist() == [10] * 10
    assert not set(splits.train_indices) & set(splits.val_indices)


@needs_fashion
def test_load_data_normalized_with_train_stats_only() -> None:
    splits = load_data(DataConfig(subset=30, val_fraction=0.25), with_test=True)
    raw = read_idx(FASHION / "train-images-idx3-ubyte.gz").astype(np.float64) / 255
    raw_train = raw[splits.train_indices]

    assert splits.mean[0] == pytest.approx(raw_train.mean(), abs=1e-6)
    assert splits.std[0] == pytest.approx(raw_train.std(), abs=1e-6)
    assert float(splits.train_x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(splits.train_x.std()) == pytest.approx(1.0, abs=1e-3)
    # The validation images are what the source holds at val_indices, scaled the same way.
    expected_val = (raw[splits.val_indices] - splits.mean[0]) / splits.std[0]
    np.testing.assert_allclose(splits.val_x[:, 0].numpy(), expected_val, atol=1e-5)

    assert splits.test_x is not None and splits.test_y is not None
    assert splits.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(splits.test_y).tolist() == [1000] * 10
    raw_test = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[:5].astype(np.float64) / 255
    expected_test = (raw_test - splits.mean[0]) / splits.std[0]
    np.testing.assert_allclose(splits.test_x[:5, 0].numpy(), expected_test, atol=1e-5)


@needs_fashion
def test_load_data_deterministic_by_seed() -> None:
    first = load_data(DataConfig(subset=20, split_seed=7))
    again = load_data(DataConfig(subset=20, split_seed=7))
    other = load_data(DataConfig(subset=20, split_seed=8))

    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.val_y, again.val_y)
    assert np.array_equal(first.val_indices, again.val_indices)
    assert not np.array_equal(first.train_indices, other.train_indices)
    assert first.as_params()["data.train_images"] == "180"


@needs_fashion
def test_load_data_subset_larger_than_class() -> None:
    with pytest.raises(DataError, match=r"data.subset=6001: .*at most 6000"):
        load_data(DataConfig(subset=6001))


@needs_fashion
def test_load_data_split_too_small_for_classes() -> None:
    with pytest.raises(DataError, match="data.val_fraction"):
        load_data(DataConfig(subset=1))


# ---------------------------------------------------------------- digits


def test_load_data_digits_offline_split() -> None:
    splits = load_data(DataConfig(dataset="digits", split_seed=0), with_test=True)
    other = load_data(DataConfig(dataset="digits", split_seed=1), with_test=True)

    assert splits.input_shape == (1, 8, 8) and splits.num_classes == 10
    assert len(splits.train_y) + len(splits.val_y) == 1437
    assert splits.test_y is not None and len(splits.test_y) == 360
    assert torch.bincount(splits.test_y).min() >= 34  # 20% of every class (174 to 183 each)
    # The test part does not move with split_seed; only the validation part does.
    assert other.test_x is not None and splits.test_x is not None
    unscaled = splits.test_x * splits.std[0] + splits.mean[0]
    unscaled_other = other.test_x * other.std[0] + other.mean[0]
    assert torch.allclose(unscaled, unscaled_other, atol=1e-5)
    assert float(unscaled.min()) >= -1e-6 and float(unscaled.max()) <= 1.0 + 1e-6
    assert not np.array_equal(splits.val_indices, other.val_indices)


# ---------------------------------------------------------------- folder

COLORS = {"cat": (200, 30, 30), "dog": (20, 160, 40), "fox": (10, 20, 230)}


def make_class_folders(root: Path, per_class: int = 5) -> Path:
    for name, color in COLORS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = (20 + 7 * i, 12 + 5 * i)  # sizes differ: everything is resized
            Image.new("RGB", size, color).save(root / name / f"{i}.png")
    return root


def folder_cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig.model_validate(
        {"dataset": "folder", "root": str(root), "image_size": 16, "val_fraction": 0.25, **kw}
    )


@pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "gray"])
def test_load_data_folder_resized_and_converted(tmp_path: Path, channels: int) -> None:
    root = make_class_folders(tmp_path / "pets")
    splits = load_data(folder_cfg(root, channels=channels), with_test=True)

    assert splits.classes == ["cat", "dog", "fox"] and splits.source == str(root)
    assert splits.input_shape == (channels, 16, 16)
    assert splits.test_y is not None and torch.bincount(splits.test_y).tolist() == [1, 1, 1]
    assert len(splits.train_y) + len(splits.val_y) == 12

    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    pixels = (splits.train_x * torch.tensor(splits.std).view(1, -1, 1, 1) + mean) * 255
    for image, label in zip(pixels, splits.train_y, strict=True):
        r, g, b = COLORS[splits.classes[int(label)]]
        # Pillow's L conversion is ITU-R 601-2 luma.
        want = [r, g, b] if channels == 3 else [r * 0.299 + g * 0.587 + b * 0.114]
        got = image.mean(dim=(1, 2)).tolist()
        assert got == pytest.approx(want, abs=1.0)


def test_load_data_folder_keeps_train_test_split(tmp_path: Path) -> None:
    make_class_folders(tmp_path / "data" / "train", per_class=4)
    make_class_folders(tmp_path / "data" / "test", per_class=2)
    splits = load_data(folder_cfg(tmp_path / "data"), with_test=True)

    assert len(splits.train_y) + len(splits.val_y) == 12
    assert splits.test_y is not None and torch.bincount(splits.test_y).tolist() == [2, 2, 2]


def test_load_data_folder_empty_class(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "pets")
    (root / "owl").mkdir()
    with pytest.raises(DataError, match=r"owl: empty class folder"):
        load_data(folder_cfg(root))


@pytest.mark.parametrize(
    "content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30], ids=["text", "png"]
)
def test_load_data_folder_unreadable_image(tmp_path: Path, content: bytes) -> None:
    root = make_class_folders(tmp_path / "pets")
    for i in range(5):  # one bad file in each part, wherever the split puts it
        (root / "dog" / f"{i}.png").write_bytes(content)
    with pytest.raises(DataError, match=r"dog/\d\.png: unreadable image"):
        load_data(folder_cfg(root))


def test_load_data_folder_skips_other_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_class_folders(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("taken in the garden")
    (root / "cat" / ".DS_Store").write_bytes(b"\x00")
    with caplog.at_level(logging.WARNING):
        splits = load_data(folder_cfg(root))
    assert len(splits.train_y) + len(splits.val_y) == 12
    assert "skipped 1 files that are not images" in caplog.text


def test_load_data_folder_needs_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root"):
        load_data(DataConfig(dataset="folder"))
    with pytest.raises(DataError, match="is not a folder"):
        load_data(folder_cfg(tmp_path / "missing"))


# ---------------------------------------------------------------- lookup order


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert cache_dir("mnist") == tmp_path / "xdg-cache" / "interplay" / "mnist"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the spec: ignored
    assert cache_dir("mnist") == Path.home() / ".cache" / "interplay" / "mnist"


@needs_fashion
def test_lookup_order_env_then_cache_then_system(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_copy = small_fashion(tmp_path / "env" / "fashion-mnist", n_train=200, n_test=50)
    cache_copy = small_fashion(cache_dir("fashion-mnist"), n_train=100, n_test=30)
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path / "env"))
    assert candidate_dirs("fashion-mnist") == [env_copy, cache_copy, FASHION]

    found = {info.name: info for info in describe()}["fashion-mnist"]
    assert (found.location, found.train_size, found.test_size) == (str(env_copy), 200, 50)
    splits = load_data(DataConfig(val_fraction=0.5), with_test=True)
    assert splits.source == str(env_copy) and splits.test_y is not None
    assert len(splits.train_y) + len(splits.val_y) == 200 and len(splits.test_y) == 50

    monkeypatch.delenv("INTERPLAY_DATA")
    assert load_data(DataConfig(val_fraction=0.5)).source == str(cache_copy)

    shutil.rmtree(cache_copy)
    assert {i.name: i for i in describe()}["fashion-mnist"].train_size == 60000


@needs_fashion
def test_lookup_skips_incomplete_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    partial = tmp_path / "env" / "fashion-mnist"
    partial.mkdir(parents=True)
    shutil.copy(FASHION / "t10k-labels-idx1-ubyte.gz", partial)
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path / "env"))

    with caplog.at_level(logging.WARNING):
        info = {i.name: i for i in describe()}["fashion-mnist"]
    assert info.location == str(FASHION)
    assert f"{partial}: incomplete fashion-mnist files" in caplog.text


@needs_fashion
def test_load_data_refuses_corrupt_file_without_falling_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    copy = small_fashion(tmp_path / "env" / "fashion-mnist", n_train=100, n_test=10)
    labels = copy / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-10])
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path / "env"))

    with pytest.raises(DataError, match=rf"{labels}: truncated IDX file"):
        load_data(DataConfig())


@needs_fashion
def test_load_data_refuses_mismatched_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    copy = small_fashion(tmp_path / "env" / "fashion-mnist", n_train=100, n_test=10)
    write_idx(copy / "train-labels-idx1-ubyte", np.zeros(90, np.uint8))
    monkeypatch.setenv("INTERPLAY_DATA", str(tmp_path / "env"))

    with pytest.raises(DataError, match="100 images but .* 90 labels"):
        load_data(DataConfig())


@pytest.mark.usefixtures("no_system_copy")
@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
def test_load_data_missing_says_how_to_get_it(name: str) -> None:
    with pytest.raises(DataError) as info:
        load_data(DataConfig(dataset=name))  # type: ignore[arg-type]
    message = str(info.value)
    assert f"dataset {name} not found" in message and str(cache_dir(name)) in message
    assert "INTERPLAY_DATA" in message and f"interplay data --fetch {name}" in message
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")
    assert not {i.name: i for i in describe()}[name].found


# ---------------------------------------------------------------- fetch from a local mirror


class Mirror:
    """A real HTTP server on 127.0.0.1 serving a folder, counting the requests it gets."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self) -> None:
                mirror.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/files/"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[Mirror]:
    served = tmp_path / "served" / "files"
    served.mkdir(parents=True)
    for f in FILES:
        if (FASHION / f).is_file():
            (served / f).symlink_to(FASHION / f)
    server = Mirror(tmp_path / "served")
    yield server
    server.server.shutdown()
    server.server.server_close()


def digest(path: Path, kind: str) -> str:
    return hashlib.new(kind, path.read_bytes()).hexdigest()


@needs_fashion
@pytest.mark.usefixtures("no_system_copy")
def test_download_files_verified_then_found_in_cache(mirror: Mirror) -> None:
    # md5 for some files, sha256 for others: both kinds of checksum are checked.
    kinds = ["md5", "sha256", "sha256", "md5"]
    sums = {f: digest(FASHION / f, k) for f, k in zip(FILES, kinds, strict=True)}
    dest = cache_dir("fashion-mnist")

    paths = download_files(mirror.url, sums, dest)

    assert paths == [dest / f for f in FILES]
    assert all(digest(p, k) == sums[p.name] for p, k in zip(paths, kinds, strict=True))
    assert sorted(p.name for p in dest.iterdir()) == sorted(FILES)  # no .part left behind
    splits = load_data(DataConfig(subset=10))
    assert splits.source == str(dest)

    download_files(mirror.url, sums, dest)  # verified copies are not downloaded again
    assert len(mirror.requests) == 4


@needs_fashion
def test_fetch_refuses_corrupt_download(mirror: Mirror, tmp_path: Path) -> None:
    name = "t10k-labels-idx1-ubyte.gz"
    good = digest(FASHION / name, "md5")
    corrupt = bytearray((FASHION / name).read_bytes())
    corrupt[3000] ^= 0x01
    (mirror.folder / "files" / name).unlink()
    (mirror.folder / "files" / name).write_bytes(bytes(corrupt))
    dest = tmp_path / "dest"

    with pytest.raises(DataError, match=rf"checksum mismatch for {mirror.url}{name}: .*{good}"):
        download_files(mirror.url, {name: good}, dest)
    assert list(dest.iterdir()) == []


@needs_fashion
def test_fetch_checks_published_checksums(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The Debian package recompressed its files, so they are not the published ones.
    monkeypatch.setenv("INTERPLAY_MIRROR", mirror.url)
    published = IDX_DATASETS["fashion-mnist"].checksums[FILES[0]]
    with pytest.raises(DataError, match=rf"checksum mismatch for {mirror.url}.*{published}"):
        fetch("fashion-mnist", force=True)
    assert list(cache_dir("fashion-mnist").iterdir()) == []


@needs_fashion
def test_fetch_nothing_when_already_installed() -> None:
    # Port 9 (discard) on 127.0.0.1: any download attempt would fail loudly.
    assert fetch("fashion-mnist", mirror="http://127.0.0.1:9/") == FASHION


def test_fetch_refuses_non_idx_file(mirror: Mirror, tmp_path: Path) -> None:
    page = mirror.folder / "files" / "index.gz"
    page.write_text("<html>Moved</html>")
    with pytest.raises(DataError, match=rf"{mirror.url}index.gz: not an IDX file: .*HTML page"):
        download_files(mirror.url, {"index.gz": digest(page, "md5")}, tmp_path / "dest")


def test_fetch_reports_http_errors(mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot download .*missing.gz: HTTP 404"):
        download_files(mirror.url, {"missing.gz": "0" * 32}, tmp_path / "dest")
    with pytest.raises(DataError, match="http://, https:// or file://"):
        fetch("mnist", mirror="ftp://127.0.0.1/", dest=tmp_path / "dest")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ([], r"no class folders"),
        (["cat"], r"one class folder \(cat\)"),
        (["cat", "dog/"], r"dog: empty class folder"),
    ],
    ids=["empty", "one-class", "empty-class"],
)
def test_data_shape_folder_problems_found_by_summary(
    tmp_path: Path, layout: list[str], message: str
) -> None:
    from interplay.summary import data_shape

    root = tmp_path / "pets"
    root.mkdir()
    for name in layout:
        (root / name.rstrip("/")).mkdir()
        if not name.endswith("/"):
            Image.new("RGB", (8, 8)).save(root / name / "0.png")

    with pytest.raises(DataError, match=message):
        data_shape(folder_cfg(root))
    with pytest.raises(DataError, match="needs data.root"):
        data_shape(DataConfig(dataset="folder"))


def test_data_shape_folder_subset_larger_than_a_class_found_by_summary(tmp_path: Path) -> None:
    from interplay.summary import data_shape

    root = make_class_folders(tmp_path / "pets", per_class=5)

    assert data_shape(folder_cfg(root, subset=3)) == ((1, 16, 16), 3)  # channels default 1
    # 5 images per class, 4 of them in the training part after the fixed 20% test hold-out.
    with pytest.raises(DataError, match=r"data.subset=5: too few training images in class"):
        data_shape(folder_cfg(root, subset=5))
