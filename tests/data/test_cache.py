"""Tests for equivlib.data.cache: committed samples, checksums, the cache, splits and the CLI."""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from equivlib.config import ParameterError
from equivlib.data import cache, forces, proteins, voxels

SAMPLE_KEYS = ("forces-gfn2-quick-seed0", "proteins-quick-seed0", "voxels-quick-seed0")


def test_committed_samples_match_checksums_and_are_small():
    sums = cache.read_samples_checksums()
    total = 0
    for key in SAMPLE_KEYS:
        path = cache.SAMPLES_DIR / f"{key}.npz"
        assert path.name in sums, f"{path.name} missing from CHECKSUMS"
        assert cache.sha256_file(path) == sums[path.name]
        total += path.stat().st_size
        _, meta = cache.load_npz(path)
        assert meta["key"] == key and meta["spec"]["profile"] == "quick" and meta["spec"]["seed"] == 0
    assert total < 1_000_000, f"committed samples total {total} bytes"


def test_save_npz_is_byte_reproducible(tmp_path):
    arrays = {"a": np.arange(5, dtype=np.float32), "s": np.array(["CCO", "c1ccccc1"])}
    d1 = cache.save_npz(tmp_path / "x.npz", arrays, {"m": 1})
    d2 = cache.save_npz(tmp_path / "y.npz", arrays, {"m": 1})
    assert d1 == d2
    back, meta = cache.load_npz(tmp_path / "x.npz")
    assert meta == {"m": 1} and back["s"].tolist() == ["CCO", "c1ccccc1"]
    with pytest.raises(ValueError, match="dtype object"):
        cache.save_npz(tmp_path / "z.npz", {"o": np.array([{}], dtype=object)}, {})


def test_corrupt_committed_sample_is_detected_and_regenerated(tmp_path, monkeypatch, caplog):
    """A corrupted sample is reported and rebuilt from the package files, identically."""
    samples = tmp_path / "samples"
    samples.mkdir()
    name = "proteins-quick-seed0.npz"
    original, _ = cache.load_npz(cache.SAMPLES_DIR / name)
    shutil.copy(cache.SAMPLES_DIR / name, samples / name)
    shutil.copy(cache.SAMPLES_DIR / "CHECKSUMS", samples / "CHECKSUMS")
    raw = bytearray((samples / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (samples / name).write_bytes(bytes(raw))
    monkeypatch.setattr(cache, "SAMPLES_DIR", samples)
    cache_dir = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="equivlib.data"):
        arrays, meta = proteins.build_backbones("quick", 0, cache_dir=cache_dir, progress=False)
    assert "checksum mismatch" in caplog.text
    assert (cache_dir / name).exists() and cache.verify_checksum(cache_dir / name)
    for k in original:  # same seed -> same data, rebuilt from the shipped PDB files
        np.testing.assert_array_equal(arrays[k], original[k])


def test_corrupt_or_stale_cache_is_detected_and_regenerated(tmp_path, caplog):
    calls = []

    def build():
        calls.append(1)
        return {"x": np.arange(4.0)}, {"note": "tiny"}

    spec = {"format": 1, "n": 4}
    kw = dict(cache_dir=tmp_path, use_samples=False)
    arrays, meta = cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 1 and meta["spec"] == spec and meta["note"] == "tiny"
    cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 1  # served from the cache
    path = tmp_path / "tiny-quick-seed0.npz"
    with open(path, "r+b") as fh:  # corrupt one byte
        fh.seek(40)
        b = fh.read(1)
        fh.seek(40)
        fh.write(bytes([b[0] ^ 0xFF]))
    with caplog.at_level(logging.WARNING, logger="equivlib.data"):
        again, _ = cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 2 and "checksum mismatch" in caplog.text
    np.testing.assert_array_equal(again["x"], np.arange(4.0))
    (tmp_path / "tiny-quick-seed0.npz.sha256").unlink()  # missing checksum
    cache.load_or_build("tiny-quick-seed0", spec, build, **kw)
    assert len(calls) == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="equivlib.data"):
        cache.load_or_build("tiny-quick-seed0", {"format": 2, "n": 4}, build, **kw)  # code changed
    assert len(calls) == 4 and "another spec" in caplog.text


def test_split_groups_is_seeded_and_bounded():
    a = cache.split_groups(50, 0.2, 0)
    assert a.sum() == 10 and np.array_equal(a, cache.split_groups(50, 0.2, 0))
    assert not np.array_equal(a, cache.split_groups(50, 0.2, 1))
    with pytest.raises(ParameterError, match="test_fraction"):
        cache.split_groups(10, 1.5, 0)


def test_quick_profile_is_served_from_committed_samples(tmp_path):
    """quick / seed 0 must load from data/samples without generating anything."""
    forces.build_forces("quick", 0, cache_dir=tmp_path)
    proteins.build_backbones("quick", 0, cache_dir=tmp_path)
    voxels.build_voxel_molecules("quick", 0, cache_dir=tmp_path)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


@pytest.mark.parametrize("module, table, variant", [
    (forces, forces.FORCE_PROFILES, {"method": "gfn2"}),
    (proteins, proteins.PROTEIN_PROFILES, {}),
    (voxels, voxels.VOXEL_PROFILES, {}),
])
def test_profile_tables_hold_the_specs_of_the_committed_samples(module, table, variant):
    """The "data" half of each profile table is the generation spec stored in the committed sample:
    a changed value would orphan the sample (and change the quick profile's data)."""
    key = cache.dataset_key(module.__name__.rsplit(".", 1)[1], "quick", 0, variant.get("method"))
    _, meta = cache.load_npz(cache.SAMPLES_DIR / f"{key}.npz")
    assert meta["spec"] == {"format": module.FORMAT_VERSION, "profile": "quick", "seed": 0, **variant,
                            **table["quick"]["data"]}
    assert set(table) == {"quick", "full"} and set(table["quick"]) == {"data", "task"}
    # the full profile may name what make smoke changes: only generation parameters, never the task's
    assert {"data", "task"} <= set(table["full"]) <= {"data", "task", "smoke"}
    smoke = table["full"].get("smoke", {})
    assert set(smoke) <= {"data", "task"} and all(set(smoke[h]) <= set(table["full"][h]) for h in smoke)


def test_smoke_mode_generates_a_smaller_full_data_set_under_its_own_key(tmp_path, monkeypatch):
    made = []

    def generate(n, grid):
        made.append((n, grid))
        return {"x": np.zeros((n, grid))}, {}

    table = {"quick": {"data": dict(n=2, grid=3)}, "full": {"data": dict(n=100, grid=5), "smoke": {"data": dict(n=4)}}}
    monkeypatch.setenv("EQUIVLIB_SMOKE", "3")
    arrays, meta = cache.load_or_build_profile("tiny", "full", 0, table, generate, format_version=1,
                                               variant=("method", "m"), cache_dir=tmp_path)
    assert made == [(4, 5)] and arrays["x"].shape == (4, 5)  # fewer samples, the full shape
    assert meta["key"] == "tiny-m-smoke-full-seed0" and meta["spec"]["n"] == 4
    cache.load_or_build_profile("tiny", "quick", 0, table, generate, format_version=1, cache_dir=tmp_path)
    assert made[-1] == (2, 3)  # the quick profile is not touched
    monkeypatch.delenv("EQUIVLIB_SMOKE")
    _, meta = cache.load_or_build_profile("tiny", "full", 0, table, generate, format_version=1, cache_dir=tmp_path)
    assert made[-1] == (100, 5) and meta["key"] == "tiny-full-seed0"


def test_cli_serves_the_committed_sample(tmp_path, capsys):
    assert voxels.main(["--profile", "quick", "--cache-dir", str(tmp_path), "--n-jobs", "2"]) == 0
    assert forces.main(["--cache-dir", str(tmp_path), "--method", "gfn2", "--n-jobs", "1"]) == 0
    assert proteins.main(["--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "voxels-quick-seed0: natoms (200,)" in out and "forces-gfn2-quick-seed0:" in out
    assert "proteins-quick-seed0:" in out
    assert not any(tmp_path.iterdir())  # nothing generated
    with pytest.raises(SystemExit):
        proteins.main(["--n-jobs", "2"])  # proteins are parsed in one process: no such option
