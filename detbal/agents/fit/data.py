"""The Nikuradse data sets of PMLB (``nikuradse_1``, ``nikuradse_2``), derived or downloaded.

Both follow from Nikuradse's 362 rough-pipe measurements (λ, r/k, Re) in the shared
``nikuradse_raw.csv`` (log is log10, see docs/fit.md for why)::

    nikuradse_1:  r_k,  log_Re = log10(Re),                         target = log10(100 λ)
    nikuradse_2:  log_v_k_nu = log10(v* k / ν) = log10(Re sqrt(λ/8) / (2 r_k)),
                  target = 1/sqrt(λ) - 2 log10(r_k)

with v* = v sqrt(λ/8) the friction velocity and Re = v d / ν, d = 2 r.  With
``download=True`` PMLB's own ``.tsv.gz`` is fetched instead, checked against the
SHA-256 in the Git-LFS pointer kept in the data directory, and cached outside the
repository.  Nothing is ever copied into the repository.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detbal.agents.fit.language import VARIABLES
from detbal.errors import DetbalError, InputError

log = logging.getLogger(__name__)

DATASETS = ("nikuradse_1", "nikuradse_2")
FEATURES: dict[str, tuple[str, ...]] = VARIABLES
RAW_FILE = "nikuradse_raw.csv"
DATA_ENV = "DETBAL_DATA_DIR"
CACHE_ENV = "DETBAL_CACHE_DIR"
PMLB_URL = "https://media.githubusercontent.com/media/EpistasisLab/pmlb/master/datasets/{name}/{name}.tsv.gz"
N_ROWS = 362


@dataclass(frozen=True)
class Dataset:
    """Features ``X`` (shape ``(n_features, n_rows)``), target ``y`` and where they came from."""

    name: str
    features: tuple[str, ...]
    X: np.ndarray
    y: np.ndarray
    source: str

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def candidate_data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Where to look, in order: the given path, ``$DETBAL_DATA_DIR``, ``../shared`` beside the repo, beside the cwd."""
    out: list[Path] = []
    if data_dir is not None:
        out.append(Path(data_dir).expanduser())
    env = os.environ.get(DATA_ENV)
    if env:
        out.append(Path(env).expanduser())
    out.append(_repo_root().parent / "shared" / "datasets" / "nikuradse")
    out.append(Path.cwd().parent / "shared" / "datasets" / "nikuradse")
    return out


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The first candidate directory that holds ``nikuradse_raw.csv`` (directly or in ``nikuradse/``).

    An explicitly given ``data_dir`` that does not hold the file is an error, not
    silently replaced by a default.
    """
    cands = candidate_data_dirs(data_dir)
    if data_dir is not None:
        cands = cands[:1]
    for cand in cands:
        for d in (cand, cand / "nikuradse", cand / "datasets" / "nikuradse"):
            if (d / RAW_FILE).is_file():
                return d
    where = ", ".join(str(c) for c in cands)
    raise DetbalError(
        f"no {RAW_FILE} found (looked in {where}); pass --data-dir or set {DATA_ENV}"
    )


def read_raw(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(lambda, r_k, Re)`` arrays from Nikuradse's measurement table (CSV with header)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror})") from None
    try:
        lam = np.array([float(r["lambda"]) for r in rows])
        rk = np.array([float(r["r_k"]) for r in rows])
        re = np.array([float(r["Re"]) for r in rows])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"expected numeric columns lambda, r_k, Re ({exc})") from None
    if not (np.all(lam > 0) and np.all(rk > 0) and np.all(re > 0)):
        raise InputError(path, "lambda, r_k and Re must be positive")
    return lam, rk, re


def derive(name: str, lam: np.ndarray, r_k: np.ndarray, re: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` of PMLB's ``name`` from λ, r/k and Re (formulas in the module docstring)."""
    if name == "nikuradse_1":
        X = np.vstack([r_k, np.log10(re)])
        y = np.log10(100.0 * lam)
    elif name == "nikuradse_2":
        X = np.log10(re * np.sqrt(lam / 8.0) / (2.0 * r_k))[None, :]
        y = 1.0 / np.sqrt(lam) - 2.0 * np.log10(r_k)
    else:
        raise DetbalError(f"unknown data set {name!r} (choose from {', '.join(DATASETS)})")
    return X, y


def lfs_oid(pointer: str | Path) -> str:
    """The ``oid sha256:...`` of a Git-LFS pointer file."""
    for line in Path(pointer).read_text(encoding="utf-8").splitlines():
        if line.startswith("oid sha256:"):
            return line.split(":", 1)[1].strip()
    raise InputError(pointer, "not a Git-LFS pointer (no 'oid sha256:' line)")


def verify_sha256(data: bytes, expected: str, label: str = "file") -> None:
    """Raise :class:`DetbalError` unless ``sha256(data) == expected``."""
    got = hashlib.sha256(data).hexdigest()
    if got != expected.lower():
        raise DetbalError(f"{label}: SHA-256 {got} does not match the expected {expected}")


def parse_pmlb_tsv(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)`` from PMLB's gzipped TSV (header row, ``target`` column last)."""
    text = gzip.decompress(data).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text), delimiter="\t")
    rows = list(reader)
    feats = FEATURES[name]
    try:
        X = np.array([[float(r[f]) for r in rows] for f in feats])
        y = np.array([float(r["target"]) for r in rows])
    except (KeyError, ValueError) as exc:
        raise DetbalError(f"{name}: unexpected PMLB file layout ({exc})") from None
    return X, y


def _cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "detbal"
    return base / "pmlb"


def fetch_pmlb(name: str, data_dir: Path, *, timeout: float = 30.0) -> tuple[bytes, str]:
    """PMLB's ``name.tsv.gz``, from the cache or downloaded, checked against the LFS pointer's oid."""
    pointer = data_dir / name / f"{name}.tsv.gz.LFS-POINTER.txt"
    if not pointer.is_file():
        raise InputError(pointer, "LFS pointer missing; cannot check a download")
    oid = lfs_oid(pointer)
    cached = _cache_dir() / f"{name}.tsv.gz"
    if cached.is_file():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == oid:
            return data, str(cached)
        log.warning("cached %s does not match its checksum; downloading again", cached)
    import urllib.request

    url = PMLB_URL.format(name=name)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
            data = resp.read()
    except OSError as exc:
        raise DetbalError(f"cannot download {url} ({exc})") from None
    verify_sha256(data, oid, url)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(cached)
    return data, url


def load_dataset(
    name: str = "nikuradse_2", data_dir: str | Path | None = None, *, download: bool = False
) -> Dataset:
    """Load ``nikuradse_1`` or ``nikuradse_2``: derived from the raw table, or PMLB's file if ``download``."""
    if name not in DATASETS:
        raise DetbalError(f"unknown data set {name!r} (choose from {', '.join(DATASETS)})")
    root = resolve_data_dir(data_dir)
    if download:
        data, where = fetch_pmlb(name, root)
        X, y = parse_pmlb_tsv(data, name)
        source = f"pmlb:{where}"
    else:
        raw = root / RAW_FILE
        X, y = derive(name, *read_raw(raw))
        source = f"derived:{raw}"
    if X.shape[1] != y.shape[0] or not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise DetbalError(f"{name}: malformed data from {source}")
    X.setflags(write=False)
    y.setflags(write=False)
    return Dataset(name=name, features=FEATURES[name], X=X, y=y, source=source)
