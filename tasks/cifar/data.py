"""CIFAR-10 in the python-batch layout: checksum-verified loading, the 40k/10k/10k split, the shipped slice.

The full data is the standard ``cifar-10-batches-py/`` folder (``data_batch_1`` … ``data_batch_5``, ``test_batch``,
``batches.meta``). Every file is verified before use: it must match either the sha256 of the project's
re-serialised copies (``../shared/data/README.md``: same pixels, labels and order as the official files, different
pickle bytes) or the md5 of the official files (what torchvision's downloader fetches), so both kinds of copy are
served and anything else is refused with a :class:`~hpobench_stn.errors.DataError` naming the file.

Split (as the paper and its reference code): the first 40,000 training images train, the last 10,000 (all of
``data_batch_5``) validate, ``test_batch`` tests. Images are held as uint8 tensors ``(N, 3, 32, 32)`` and labels
as int64; normalisation happens on the fly (:func:`normalise`, or inside the augmentation).

The ``tiny`` presets read the slice shipped in ``tasks/cifar/data/cifar10-slice.npz`` (see the README beside it;
:func:`make_slice` is exactly how it was cut).
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hpobench_stn.errors import DataError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
DATA_FILES = (*TRAIN_FILES, TEST_FILE)
N_TRAIN, N_VAL, N_TEST = 40_000, 10_000, 10_000
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DOWNLOAD_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

#: sha256 of the project's re-serialised copies (``../shared/data/README.md``).
SHA256 = {
    "data_batch_1": "ba51618d54ec3efb4cbab535701e7dc741add8e3164214e9d3dc42441c19cd70",
    "data_batch_2": "d731350410fc6bc873bc70411340bda1913e7ae18604ab8bdacc1a0ebaa08736",
    "data_batch_3": "2b1b0d462e041be8b7bd1ed4b27cbb0db2809f2758eec58ffaea50419ee8f31f",
    "data_batch_4": "6765612ed2ee2ea7c240f1b9a4a85e9b0185078d1391fb827111a9f174caf91b",
    "data_batch_5": "ce607050fd08b942dff8a33a8aa32a28c3447b3fef3574f105cc5df1a3cf8ab1",
    "test_batch": "ebf5384df9c222e45880b31b1931a2767de681d46eeee01212da4717e2b695a5",
    "batches.meta": "f962466ef690d46b226450fb9aadc74ba4bc64a76aa526b5827fe4bc5c7125cb",
}
#: md5 of the official files (those of ``cifar-10-python.tar.gz``, as torchvision checks them).
OFFICIAL_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}

#: Normalisation constants of the reference code (per-channel mean and std of the training pixels, /255).
MEAN = (125.3 / 255, 123.0 / 255, 113.9 / 255)
STD = (63.0 / 255, 62.1 / 255, 66.7 / 255)

SLICE_PATH = Path(__file__).parent / "data" / "cifar10-slice.npz"
#: Images per class in the shipped slice: train (from data_batch_1), validation (data_batch_5), test.
SLICE_PER_CLASS = (40, 20, 20)

_HOW_TO_GET = (
    f"get CIFAR-10 with --download (torchvision fetches {DOWNLOAD_URL}), or unpack that archive and pass the "
    f"folder holding {FOLDER}/ with --data-dir (or the environment variable HPOBENCH_STN_DATA)"
)


@dataclass(frozen=True)
class CifarSplits:
    """Train / validation / test images (uint8 ``(N, 3, 32, 32)``) and labels (int64 ``(N,)``)."""

    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    source: str

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """``(images, labels)`` of ``"train"``, ``"val"`` or ``"test"``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, f"{name}_x"), getattr(self, f"{name}_y")

    def subset(self, n_train: int | None = None, n_val: int | None = None, n_test: int | None = None) -> CifarSplits:
        """The first ``n`` examples of each split (``None`` keeps a split whole); views, no copies."""
        return CifarSplits(
            self.train_x[:n_train],
            self.train_y[:n_train],
            self.val_x[:n_val],
            self.val_y[:n_val],
            self.test_x[:n_test],
            self.test_y[:n_test],
            self.source,
        )

    def to(self, device: str | torch.device) -> CifarSplits:
        """The same splits on ``device``."""
        moved = [t.to(device) for t in (self.train_x, self.train_y, self.val_x, self.val_y, self.test_x, self.test_y)]
        return CifarSplits(*moved, source=self.source)


def normalise(images: Tensor) -> Tensor:
    """uint8 ``(B, 3, H, W)`` images (or floats in [0, 1]) to normalised float32 with the reference constants."""
    mean = torch.tensor(MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(1, 3, 1, 1)
    if images.dtype == torch.uint8:
        return images.float().div_(255.0).sub_(mean).div_(std)  # a fresh tensor: in place is safe
    return (images.float() - mean) / std


# --- verification ---------------------------------------------------------------------------------------------
def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def verify_file(path: Path) -> None:
    """Raise :class:`DataError` unless ``path`` matches a known checksum of its CIFAR-10 file name."""
    name = path.name
    if name not in SHA256:
        raise DataError(f"{path}: not a CIFAR-10 python-batch file name (expected one of {', '.join(SHA256)})")
    if not path.is_file():
        raise DataError(f"missing CIFAR-10 file {path}; {_HOW_TO_GET}")
    sha, md5 = _digests(path)
    if sha != SHA256[name] and md5 != OFFICIAL_MD5[name]:
        raise DataError(
            f"CIFAR-10 file {path} is corrupt or not the expected file (sha256 {sha[:16]}…, md5 {md5}; matches "
            f"neither the official md5 {OFFICIAL_MD5[name]} nor the known sha256 {SHA256[name][:16]}…): delete it "
            f"and {_HOW_TO_GET}"
        )


def find_batches(data_dir: Path) -> Path | None:
    """The folder holding the batch files: ``data_dir/cifar-10-batches-py/`` or ``data_dir`` itself."""
    for candidate in (data_dir / FOLDER, data_dir):
        if any((candidate / name).exists() for name in DATA_FILES):
            return candidate
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except Exception as exc:  # a verified file cannot fail here, but an unverified caller's might
        raise DataError(f"cannot read CIFAR-10 file {path} ({type(exc).__name__}: {exc}); {_HOW_TO_GET}") from None
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise DataError(f"CIFAR-10 file {path} has an unexpected layout {data.shape}; {_HOW_TO_GET}")
    return data, labels


def _images(rows: np.ndarray) -> Tensor:
    """Rows of 3072 bytes (R plane, G plane, B plane) to a ``(N, 3, 32, 32)`` uint8 tensor (a view)."""
    return torch.from_numpy(np.ascontiguousarray(rows).reshape(-1, 3, 32, 32))


@lru_cache(maxsize=2)
def _load_folder(folder: str) -> CifarSplits:
    root = Path(folder)
    for name in DATA_FILES:
        if not (root / name).is_file():
            raise DataError(f"missing CIFAR-10 file {root / name}; {_HOW_TO_GET}")
    for name in (*DATA_FILES, META_FILE):
        if name == META_FILE and not (root / name).exists():
            continue  # class names are fixed; the meta file is checked when present
        verify_file(root / name)
    parts = [_read_batch(root / name) for name in TRAIN_FILES]
    train_rows = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    test_rows, test_labels = _read_batch(root / TEST_FILE)
    if train_rows.shape[0] != N_TRAIN + N_VAL or test_rows.shape[0] != N_TEST:
        raise DataError(f"CIFAR-10 in {root} has {train_rows.shape[0]} training / {test_rows.shape[0]} test images")
    images = _images(train_rows)
    labels = torch.from_numpy(train_labels)
    return CifarSplits(
        images[:N_TRAIN],
        labels[:N_TRAIN],
        images[N_TRAIN:],
        labels[N_TRAIN:],
        _images(test_rows),
        torch.from_numpy(test_labels),
        source=str(root),
    )


def default_download_root() -> Path:
    """Where ``--download`` puts CIFAR-10 when no data folder was given."""
    return Path.home() / ".cache" / "hpobench-stn"


def _download(root: Path) -> None:
    import torchvision

    try:
        root.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        torchvision.datasets.CIFAR10(str(root), train=False, download=True)
    except Exception as exc:
        raise DataError(
            f"downloading CIFAR-10 into {root} failed ({type(exc).__name__}: {exc}); fetch {DOWNLOAD_URL} by hand, "
            f"unpack it and pass the folder holding {FOLDER}/ with --data-dir"
        ) from None


def load_full(data_dir: str | Path | None = None, download: bool = False) -> CifarSplits:
    """The full, verified CIFAR-10 split from ``data_dir`` (or downloaded when ``download``).

    ``data_dir`` may hold ``cifar-10-batches-py/`` or the batch files themselves. Missing files are downloaded
    with torchvision's downloader when ``download`` is set (into ``data_dir``, else
    :func:`default_download_root`); otherwise a :class:`DataError` says how to get them.
    """
    if data_dir is None and not download:
        raise DataError(f"this preset needs the full CIFAR-10 data: {_HOW_TO_GET}")
    base = Path(data_dir).expanduser() if data_dir is not None else default_download_root()
    folder = find_batches(base)
    complete = folder is not None and all((folder / name).is_file() for name in DATA_FILES)
    if not complete and download:
        _download(base)
        folder = base / FOLDER
    elif folder is None:
        raise DataError(f"no CIFAR-10 batch files in {base} (nor in {base / FOLDER}); {_HOW_TO_GET}")
    return _load_folder(str(folder.resolve()))


@lru_cache(maxsize=1)
def load_slice(path: str = str(SLICE_PATH)) -> CifarSplits:
    """The slice of real CIFAR-10 shipped with the repository (see ``tasks/cifar/data/README.md``)."""
    file = Path(path)
    try:
        with np.load(file) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise DataError(f"missing the shipped CIFAR-10 slice {file}; restore it from the repository") from None
    except Exception as exc:
        raise DataError(
            f"cannot read the shipped CIFAR-10 slice {file} ({exc}); restore it from the repository"
        ) from None
    return CifarSplits(
        _images(arrays["train_x"]),
        torch.from_numpy(arrays["train_y"].astype(np.int64)),
        _images(arrays["val_x"]),
        torch.from_numpy(arrays["val_y"].astype(np.int64)),
        _images(arrays["test_x"]),
        torch.from_numpy(arrays["test_y"].astype(np.int64)),
        source=str(file),
    )


def slice_indices(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Positions of the first ``per_class`` images of every class, in file order."""
    picks = [np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASSES))]
    return np.sort(np.concatenate(picks))


def make_slice(source_dir: str | Path, out: str | Path = SLICE_PATH) -> Path:
    """Cut the shipped slice from the full data (verified): how ``cifar10-slice.npz`` was made.

    Train: the first 40 images of each class in ``data_batch_1`` (training part of the split); validation: the
    first 20 of each class in ``data_batch_5`` (the validation part); test: the first 20 of each class in
    ``test_batch``; all in file order. Stored as uint8 rows of 3072 bytes (the batch layout), int64 labels and
    the images' positions in their split (``*_index``), compressed with ``numpy.savez_compressed``.
    """
    folder = find_batches(Path(source_dir))
    if folder is None:
        raise DataError(f"no CIFAR-10 batch files in {source_dir}; {_HOW_TO_GET}")
    arrays: dict[str, np.ndarray] = {}
    for split, name, per_class in (
        ("train", "data_batch_1", SLICE_PER_CLASS[0]),
        ("val", "data_batch_5", SLICE_PER_CLASS[1]),
        ("test", "test_batch", SLICE_PER_CLASS[2]),
    ):
        verify_file(folder / name)
        rows, labels = _read_batch(folder / name)
        idx = slice_indices(labels, per_class)
        arrays[f"{split}_x"] = rows[idx]
        arrays[f"{split}_y"] = labels[idx]
        arrays[f"{split}_index"] = idx  # data_batch_1 is the start of train, data_batch_5 all of validation
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return out
