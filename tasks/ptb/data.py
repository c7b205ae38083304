"""Penn Treebank (Mikolov's language-modelling version): find, verify, download, tokenise and batchify.

The three splits ``ptb.{train,valid,test}.txt`` (plain or gzip) are looked for in a data folder (the ``data_dir``
argument, i.e. ``--data-dir``; else the environment variable ``HPOBENCH_STN_DATA``; else the download cache
``~/.cache/hpobench-stn/data`` when an earlier download put them there), either directly or in its ``ptb/``
subfolder, and verified against known checksums (the sha256 of the ``.gz`` as distributed in
this project's data folder, or the sha256 of the decompressed text, so a plain ``.txt`` or a re-compressed
``.gz`` passes too). A missing or corrupt file raises :class:`~hpobench_stn.errors.DataError` naming the file and
how to get it; ``download=True`` fetches Mikolov's ``simple-examples.tgz`` instead.

Tokens are the whitespace-separated words of each line followed by ``<eos>``; ids are assigned in order of first
appearance in the training split (10,000 types on the full data). Words of the validation and test splits that
the training split lacks become ``<unk>``: that never happens on the full data and only on the shipped slice
(``tasks/ptb/data/``, the first tenth of the lines of each split, see its README and :func:`write_slice`), whose
vocabulary is built from the slice's own training split.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from hpobench_stn.errors import DataError

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"
DATA_DIR_ENV = "HPOBENCH_STN_DATA"
DOWNLOAD_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
DEFAULT_DOWNLOAD_DIR = Path.home() / ".cache" / "hpobench-stn" / "data"
SLICE_DIR = Path(__file__).parent / "data"
SLICE_FRACTION = 10  # the slice keeps the first 1/SLICE_FRACTION of the lines of each split


@dataclass(frozen=True)
class SplitFacts:
    """What one split's file must be: checksums of the ``.gz`` and of the text, line and token counts."""

    gz_sha256: str | None
    txt_sha256: str
    txt_md5: str
    lines: int
    tokens: int


#: The full data (see ``shared/data/README.md``); the md5 of the text is the one torchtext's PennTreebank uses.
FULL_FACTS = {
    "train": SplitFacts(
        "270e0c1de69c076ee9be3fb389e0a6a3c849a03664d9a05550c6a98afd63bf4e",
        "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        "f26c4b92c5fdc7b3f8c7cdcb991d8420",
        42068,
        929589,
    ),
    "valid": SplitFacts(
        "2c532ce295a2a82b986b0ab85f39422d4c1a6211cc78d9d4c3b647eb827d56a5",
        "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        "aa0affc06ff7c36e977d7cd49e3839bf",
        3370,
        73760,
    ),
    "test": SplitFacts(
        "c186c58140c532dcf89939356c67f0ceaad98baac97c3eab733c14c9ce427ffa",
        "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        "8b80168b89c18661a38ef683c0dc3721",
        3761,
        82430,
    ),
}

#: The shipped slice ``tasks/ptb/data/ptb.{split}.txt.gz`` (cut by :func:`write_slice`).
SLICE_FACTS = {
    "train": SplitFacts(
        "edd349aea6e8533c710c71ff108b284f94a977fc2b5deb51788c9d3da9def9cd",
        "3cf37ced798621b20dcc9f9207990ebb4e7bd969562629a588ac685108dfd7ac",
        "224c4099a3b07ba2bf65a5387767ab80",
        4206,
        93156,
    ),
    "valid": SplitFacts(
        "2da1cf5744d6d50b6f36a90a1453069d1ef5e40b0e93e107c6e27d3bdd3e7254",
        "64a803b3cf8d0f1d6c748329a9ea8761a991b51e3ec9bd0f6438d114a6cc774f",
        "425c3a0e786dc62212e05fadd9507642",
        337,
        7786,
    ),
    "test": SplitFacts(
        "16dfc52cc6bdb9ac3b926c37b1a8d36dd306a5a58252fbed8eb4d1c680a7b7a0",
        "ff755c3d5c8b70a73844727809c355eb323e4addeddb12f2aedfc3d6f57fef6e",
        "1b0b5da67078107a824e1533443d024b",
        376,
        8321,
    ),
}

_HOW_TO_GET = (
    "put Mikolov's ptb.train.txt, ptb.valid.txt and ptb.test.txt (plain or .gz) in a folder <dir>/ptb/ and pass "
    f"--data-dir <dir> (or set {DATA_DIR_ENV}=<dir>), or add --download to fetch them from {DOWNLOAD_URL}"
)


@dataclass(frozen=True)
class Corpus:
    """Token-id streams of the three splits and the vocabulary they index."""

    vocab: tuple[str, ...]
    train: Tensor
    valid: Tensor
    test: Tensor
    source: str
    unknown: dict[str, int] = field(default_factory=dict)

    def split(self, name: str) -> Tensor:
        """The 1-d int64 token stream of ``"train"``, ``"valid"`` or ``"test"``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}[name]


# --- files ------------------------------------------------------------------------------------------------------
def _candidates(folder: Path, split: str) -> list[Path]:
    name = f"ptb.{split}.txt"
    return [folder / sub / f"{name}{ext}" for sub in ("ptb", ".") for ext in (".gz", "")]


def find_split_file(folder: Path, split: str) -> Path | None:
    """``<folder>/ptb/ptb.<split>.txt[.gz]`` or ``<folder>/ptb.<split>.txt[.gz]``, the first that exists."""
    return next((p for p in _candidates(Path(folder), split) if p.is_file()), None)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """The data folder: the argument, else the environment variable ``HPOBENCH_STN_DATA``, else ``None``."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    return Path(chosen).expanduser() if chosen else None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read PTB file {path} ({exc.strerror}); {_HOW_TO_GET}") from None


def _decompress(path: Path, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"PTB file {path} is not a valid gzip file ({exc}); replace it: {_HOW_TO_GET}") from None


def read_verified(path: Path, facts: SplitFacts, how_to_fix: str = _HOW_TO_GET) -> str:
    """The text of a split file after checking it against ``facts``; :class:`DataError` if it does not match.

    A ``.gz`` file passes when its own sha256 is the known one or when its decompressed text's sha256 is; a plain
    file passes when its sha256 is the known text's.
    """
    raw = _read_bytes(path)
    if path.suffix == ".gz":
        text = _decompress(path, raw)
        if facts.gz_sha256 is not None and hashlib.sha256(raw).hexdigest() == facts.gz_sha256:
            return text.decode("utf-8")
    else:
        text = raw
    digest = hashlib.sha256(text).hexdigest()
    if digest != facts.txt_sha256:
        raise DataError(
            f"PTB file {path} is corrupt or not the expected split: the sha256 of its text is {digest}, "
            f"expected {facts.txt_sha256}; replace it: {how_to_fix}"
        )
    return text.decode("utf-8")


def download_ptb(dest: Path, url: str = DOWNLOAD_URL, timeout: float = 60.0) -> Path:
    """Fetch ``simple-examples.tgz`` and write its three PTB splits, verified, to ``dest/ptb/``; returns ``dest``."""
    target = Path(dest) / "ptb"
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "simple-examples.tgz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, archive.open("wb") as out:
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise DataError(
                f"could not download the PTB data from {url} ({exc}); download and unpack it by hand and pass "
                f"the folder holding ptb/ptb.train.txt to --data-dir"
            ) from None
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for split in SPLITS:
                    member = tar.extractfile(f"./simple-examples/data/ptb.{split}.txt")
                    if member is None:
                        raise KeyError(split)
                    text = member.read()
                    if hashlib.sha256(text).hexdigest() != FULL_FACTS[split].txt_sha256:
                        raise DataError(f"the downloaded ptb.{split}.txt from {url} has an unexpected checksum")
                    (target / f"ptb.{split}.txt").write_bytes(text)
        except (tarfile.TarError, KeyError, OSError) as exc:
            raise DataError(f"the archive downloaded from {url} is not the expected one ({exc})") from None
    return Path(dest)


def locate_full(data_dir: str | Path | None, download: bool = False) -> dict[str, Path]:
    """The three split files of the full data (see the module docstring for the search order)."""
    folder = resolve_data_dir(data_dir)
    if folder is None and all(find_split_file(DEFAULT_DOWNLOAD_DIR, s) for s in SPLITS):
        folder = DEFAULT_DOWNLOAD_DIR  # an earlier --download without a data folder put the files there
    found = {s: find_split_file(folder, s) for s in SPLITS} if folder is not None else dict.fromkeys(SPLITS)
    if all(found.values()):
        return found  # type: ignore[return-value]
    if download:
        dest = folder if folder is not None else DEFAULT_DOWNLOAD_DIR
        download_ptb(dest)
        return {s: find_split_file(dest, s) for s in SPLITS}  # type: ignore[misc]
    if folder is None:
        raise DataError(f"the PTB data (ptb.train.txt) was not found: no data folder given; {_HOW_TO_GET}")
    missing = next(s for s in SPLITS if found[s] is None)
    tried = " or ".join(str(p) for p in _candidates(folder, missing))
    raise DataError(f"PTB file ptb.{missing}.txt not found (looked for {tried}); {_HOW_TO_GET}")


# --- tokens -----------------------------------------------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Whitespace-separated words, each line followed by ``<eos>``."""
    tokens: list[str] = []
    for line in text.splitlines():
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def build_vocab(tokens: Iterable[str]) -> tuple[str, ...]:
    """Word types in order of first appearance."""
    return tuple(dict.fromkeys(tokens))


def encode(tokens: list[str], index: dict[str, int]) -> tuple[Tensor, int]:
    """Token ids (words missing from ``index`` become ``<unk>``) and how many were missing."""
    unk = index.get(UNK)
    ids = [index.get(t, -1) for t in tokens]
    missing = ids.count(-1)
    if missing:
        if unk is None:
            raise DataError(f"{missing} tokens are not in the vocabulary, which has no {UNK} to map them to")
        ids = [unk if i < 0 else i for i in ids]
    return torch.tensor(ids, dtype=torch.int64), missing


def corpus_from_texts(texts: dict[str, str], source: str) -> Corpus:
    """Tokenise the three splits, build the vocabulary from the training split, encode all three."""
    tokens = {s: tokenize(texts[s]) for s in SPLITS}
    vocab = build_vocab(tokens["train"])
    index = {w: i for i, w in enumerate(vocab)}
    streams, unknown = {}, {}
    for s in SPLITS:
        streams[s], unknown[s] = encode(tokens[s], index)
    return Corpus(vocab, streams["train"], streams["valid"], streams["test"], source, unknown)


_CACHE: dict[tuple[object, ...], Corpus] = {}


def _cached(key: tuple[object, ...], build: object) -> Corpus:
    if key not in _CACHE:
        _CACHE[key] = build()  # type: ignore[operator]
    return _CACHE[key]


def _stat_key(paths: dict[str, Path]) -> tuple[object, ...]:
    return tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())


def load_full(data_dir: str | Path | None = None, download: bool = False) -> Corpus:
    """The full PTB (verified); cached per process by file path, size and modification time."""
    paths = locate_full(data_dir, download)

    def build() -> Corpus:
        texts = {s: read_verified(paths[s], FULL_FACTS[s]) for s in SPLITS}
        return corpus_from_texts(texts, f"full PTB from {paths['train'].parent}")

    return _cached(("full", *_stat_key(paths)), build)


def slice_paths() -> dict[str, Path]:
    """The shipped slice's files."""
    return {s: SLICE_DIR / f"ptb.{s}.txt.gz" for s in SPLITS}


def load_slice() -> Corpus:
    """The shipped slice (verified), with its own vocabulary; cached per process."""
    paths = slice_paths()
    fix = "the slice ships with the repository: restore tasks/ptb/data/ from version control"
    for p in paths.values():
        if not p.is_file():
            raise DataError(f"shipped PTB slice file {p} is missing; {fix}")

    def build() -> Corpus:
        texts = {s: read_verified(paths[s], SLICE_FACTS[s], fix) for s in SPLITS}
        return corpus_from_texts(texts, f"PTB slice in {SLICE_DIR}")

    return _cached(("slice", *_stat_key(paths)), build)


def cut_slice(text: str, fraction: int = SLICE_FRACTION) -> str:
    """The first ``⌊lines / fraction⌋`` lines of a split's text, unchanged."""
    lines = text.splitlines(keepends=True)
    return "".join(lines[: len(lines) // fraction])


def write_slice(full_dir: str | Path, out_dir: str | Path = SLICE_DIR) -> dict[str, Path]:
    """Cut the slice from the verified full data and write it gzip-compressed (level 9, no name, mtime 0)."""
    paths = locate_full(full_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for s in SPLITS:
        text = cut_slice(read_verified(paths[s], FULL_FACTS[s])).encode("utf-8")
        buffer = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as gz:
            gz.write(text)
        written[s] = out / f"ptb.{s}.txt.gz"
        written[s].write_bytes(buffer.getvalue())
    return written


def batchify(tokens: Tensor, batch_size: int) -> Tensor:
    """Cut a token stream into ``batch_size`` contiguous columns: shape ``(len // batch_size, batch_size)``."""
    steps = tokens.numel() // batch_size
    if steps < 2:
        raise DataError(f"a stream of {tokens.numel()} tokens is too short for batch size {batch_size}")
    return tokens[: steps * batch_size].view(batch_size, steps).t().contiguous()
