"""Nikuradse data sets: derived from the shared raw table, located by flag or environment."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from detbal.agents.fit import data as D
from detbal.errors import DetbalError


@pytest.fixture
def nik_dir(shared_dir: Path) -> Path:
    d = shared_dir / "datasets" / "nikuradse"
    if not (d / D.RAW_FILE).is_file():
        pytest.skip("shared Nikuradse data not present")
    return d


def test_nikuradse_2_rows_and_ranges(nik_dir: Path) -> None:
    ds = D.load_dataset("nikuradse_2", nik_dir)
    assert ds.features == ("log_v_k_nu",)
    assert ds.X.shape == (1, 362) and ds.y.shape == (362,)
    x, y = ds.X[0], ds.y
    # Nikuradse's Fig. 11 spans log10(v* k / nu) from about -0.1 to 3.5
    assert -0.2 < x.min() < 0.0 and 3.3 < x.max() < 3.6
    assert 0.4 < y.min() and y.max() < 2.3
    # fully rough regime: the Prandtl collapse levels off at 1.74 (= 2 log10(3.7)) in log10
    rough = x > 2.2
    assert rough.sum() > 20
    assert y[rough].mean() == pytest.approx(1.74, abs=0.02)
    # PMLB's summary: the target has 80 distinct values (two decimals)
    assert len(np.unique(np.round(y, 2))) == 80


def test_nikuradse_1_rows_and_ranges(nik_dir: Path) -> None:
    ds = D.load_dataset("nikuradse_1", nik_dir)
    assert ds.features == ("r_k", "log_Re")
    assert ds.X.shape == (2, 362)
    r_k, log_re = ds.X
    assert set(np.unique(r_k)) == {15.0, 30.6, 60.0, 126.0, 252.0, 507.0}
    assert 3.5 < log_re.min() and log_re.max() < 6.1
    lam = 10 ** ds.y / 100
    assert 0.015 < lam.min() and lam.max() < 0.07


def test_both_sets_come_from_the_same_measurements(nik_dir: Path) -> None:
    one = D.load_dataset("nikuradse_1", nik_dir)
    two = D.load_dataset("nikuradse_2", nik_dir)
    r_k, log_re = one.X
    lam = 10 ** one.y / 100
    x = log_re + 0.5 * np.log10(lam / 8) - np.log10(2 * r_k)
    np.testing.assert_allclose(two.X[0], x, atol=1e-12)
    np.testing.assert_allclose(two.y, 1 / np.sqrt(lam) - 2 * np.log10(r_k), atol=1e-12)


def test_data_dir_from_environment(nik_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(D.DATA_ENV, str(nik_dir.parent))  # the datasets/ folder works too
    assert D.resolve_data_dir() == nik_dir
    assert D.load_dataset().n_rows == 362


def test_explicit_dir_without_data_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DetbalError, match="nikuradse_raw.csv"):
        D.load_dataset("nikuradse_2", tmp_path)


def test_unknown_dataset() -> None:
    with pytest.raises(DetbalError, match="unknown data set"):
        D.load_dataset("nikuradse_3")


def test_lfs_pointer_oid_and_checksum(nik_dir: Path) -> None:
    oid = D.lfs_oid(nik_dir / "nikuradse_2" / "nikuradse_2.tsv.gz.LFS-POINTER.txt")
    assert oid == "0d43780ab866e54a2a78d8c86ba231ad0a5d55588450a33ed6fe52bee9638341"
    with pytest.raises(DetbalError, match="does not match"):
        D.verify_sha256(b"not the PMLB file", oid)


def test_download_path_uses_a_verified_cached_copy(
    nik_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PMLB-file path end to end, without network: a cached file whose SHA-256 matches the pointer."""
    ref = D.load_dataset("nikuradse_2", nik_dir)
    rows = "\n".join(f"{float(x)!r}\t{float(y)!r}" for x, y in zip(ref.X[0], ref.y))
    blob = gzip.compress(f"log_v_k_nu\ttarget\n{rows}\n".encode())
    data_dir = tmp_path / "data"
    (data_dir / "nikuradse_2").mkdir(parents=True)
    (data_dir / D.RAW_FILE).write_bytes((nik_dir / D.RAW_FILE).read_bytes())
    (data_dir / "nikuradse_2" / "nikuradse_2.tsv.gz.LFS-POINTER.txt").write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        f"oid sha256:{hashlib.sha256(blob).hexdigest()}\nsize {len(blob)}\n"
    )
    cache = tmp_path / "cache"
    (cache / "pmlb").mkdir(parents=True)
    (cache / "pmlb" / "nikuradse_2.tsv.gz").write_bytes(blob)
    monkeypatch.setenv(D.CACHE_ENV, str(cache))
    ds = D.load_dataset("nikuradse_2", data_dir, download=True)
    assert ds.source.startswith("pmlb:")
    np.testing.assert_array_equal(ds.X, ref.X)
    np.testing.assert_array_equal(ds.y, ref.y)
