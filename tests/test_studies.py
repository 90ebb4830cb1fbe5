"""Tests for equivlib.studies: the estimator studies of chapter 1."""
import pytest
import torch

from equivlib.data import lennard_jones_clusters, lennard_jones_forces
from equivlib.groups import (VectorAction, cube_group, exhaustive, sample_design, sample_haar,
                             tetrahedral_group)
from equivlib.config import ParameterError
from equivlib.studies import ratio_bias, resampling_study, scheme_study, se_ratio_table, twirled_inference_study
from equivlib.training import log_cosh
from equivlib.twirl import decompose, decompose_general


def pool(P=24, B=6, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    Z = torch.randn(P, B, D, generator=g, dtype=torch.float64) + 2.0
    y = torch.randn(B, D, generator=g, dtype=torch.float64)
    return Z, y


def test_resampling_study_truth_and_bias():
    Z, y = pool()
    table, truth = resampling_study(Z, y, [2, 4], 400, generator=torch.Generator().manual_seed(1), n_boot=0)
    exact = decompose(Z[None], y, "exhaustive").summary()
    for k in ("L", "L_mean", "L_equiv", "percent"):
        assert truth[k] == pytest.approx(exact[k], rel=1e-12)
    assert not any(c.startswith("boot_") for c in table.columns)  # n_boot=0 skips the bootstrap
    for N in (2, 4):
        sub = table[table["N"] == N]
        unb = sub[sub["estimator"] == "unbiased"]["L_equiv"]
        plug = sub[sub["estimator"] == "plugin"]["L_equiv"]
        se = unb.std() / len(unb) ** 0.5
        assert abs(unb.mean() - truth["L_equiv"]) < 4 * se  # unbiased
        # with replacement from the pool: the plug-in is biased by the factor 1 - 1/N
        assert plug.mean() == pytest.approx((1 - 1 / N) * truth["L_equiv"], abs=4 * plug.std() / len(plug) ** 0.5)


def test_resampling_study_bootstrap_and_errors():
    Z, y = pool(P=8, B=4)
    table, _ = resampling_study(Z, y, [3], 3, generator=torch.Generator().manual_seed(2), n_boot=5)
    boot = table.filter(like="boot_")
    assert boot.shape[1] > 0 and boot[table["rep"] == 0].notna().all().all() and boot[table["rep"] > 0].isna().all().all()
    with pytest.raises(ValueError, match="N >= 2"):
        resampling_study(Z, y, [1], 2, generator=torch.Generator().manual_seed(0))


def test_ratio_bias_matches_the_delta_method():
    # one sample, three outputs, the percent near 50 %: the denominator is noisy and the ratio visibly biased
    g = torch.Generator().manual_seed(5)
    Z, y = torch.randn(256, 1, 3, generator=g, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    table, truth = resampling_study(Z, y, [2, 4], 2000, generator=torch.Generator().manual_seed(6), n_boot=0)
    rb = ratio_bias(table, truth).set_index("N")
    assert list(rb.columns) == ["percent", "bias", "bias_se", "delta_method", "cs_bound", "n_reps"]
    assert (rb["n_reps"] == 2000).all()
    assert (rb["bias"].abs() <= rb["cs_bound"] + 4 * rb["bias_se"]).all()  # |E a/b - A/B| <= sd(a/b) sd(b) / B
    assert rb.loc[2, "bias"] > 4 * rb.loc[2, "bias_se"]  # unbiased numerator and denominator, biased ratio
    # measured bias agrees with the second-order prediction (MC error plus a third-order allowance)
    for N in (2, 4):
        assert abs(rb.loc[N, "bias"] - rb.loc[N, "delta_method"]) < 4 * rb.loc[N, "bias_se"] + 0.3 * abs(
            rb.loc[N, "delta_method"]), rb


def test_ratio_bias_is_zero_for_an_equivariant_pool():
    _, y = pool(P=8, B=3, D=2)
    Z = (y + 1.0)[None].expand(8, *y.shape).clone()  # every twisted prediction equal: L_equiv = 0
    table, truth = resampling_study(Z, y, [2], 5, generator=torch.Generator().manual_seed(0), n_boot=0)
    rb = ratio_bias(table, truth)
    assert truth["percent"] == 0 and rb["bias"].abs().max() < 1e-12 and rb["delta_method"].abs().max() < 1e-12
    assert rb["cs_bound"].abs().max() < 1e-12


def test_resampling_study_general_loss_correction():
    Z, y = pool(P=48, B=6, D=3, seed=7)
    table, truth = resampling_study(Z, y, [2, 4], 100, generator=torch.Generator().manual_seed(8), loss_fn=log_cosh)
    exact = decompose_general(Z[None], y, log_cosh, "exhaustive", estimator="plugin").summary()
    assert truth["L_equiv"] == pytest.approx(exact["L_equiv"], rel=1e-12) and truth["L_equiv"] > 0
    assert not any(c.startswith("boot_") for c in table.columns)
    for N in (2, 4):
        sub = table[table["N"] == N]
        plug = sub[sub["estimator"] == "plugin"]["L_equiv"].mean() / truth["L_equiv"] - 1
        corr = sub[sub["estimator"] == "unbiased"]["L_equiv"].mean() / truth["L_equiv"] - 1
        assert plug < -0.5 / N  # biased low, about -1/N to second order
        assert abs(corr) < abs(plug) / 2  # the second-order correction removes most of it
    with pytest.raises(ValueError, match="mask"):
        resampling_study(Z, y, [2], 2, generator=torch.Generator(), loss_fn=log_cosh, mask=torch.ones(6, 3, dtype=bool))


@pytest.fixture(scope="module")
def clusters():
    b = lennard_jones_clusters(6, (4, 6), generator=torch.Generator().manual_seed(3))
    return b.positions, b.forces, b.mask


def lj_forces(x, mask=None):  # exactly rotation-equivariant
    return lennard_jones_forces(x, mask)[1]


def skewed(x, mask=None):  # not equivariant: the forces of an anisotropically squashed cluster
    return lj_forces(x * torch.tensor([1.0, 1.0, 0.8], dtype=x.dtype), mask)


SAMPLERS = {
    "tetrahedral ×2": lambda B, g: sample_design(tetrahedral_group(), 2, batch=B, generator=g),
    "Haar 24": lambda B, g: sample_haar(24, batch=B, generator=g),
}


def test_scheme_study_exactly_equivariant_model_has_zero_percent(clusters):
    x, y, m = clusters
    table = scheme_study(lj_forces, x, 1.1 * y, VectorAction(), SAMPLERS, 3, generator=torch.Generator().manual_seed(0),
                         extras={"mask": m}, mask=m)
    assert len(table) == 2 * 3 and set(table["scheme"]) == set(SAMPLERS)
    assert (table.groupby("scheme")["N"].first() == 24).all()  # equal cost: 2 x 12 and 24
    assert table["percent"].abs().max() < 1e-20 and (table["L"] > 0).all()  # the loss is all in L_mean
    assert ((table["L"] - table["L_mean"]).abs() < 1e-12 * table["L"]).all()


def test_scheme_study_estimates_agree_on_a_non_equivariant_model(clusters):
    x, y, m = clusters
    table = scheme_study(skewed, x, y, VectorAction(), SAMPLERS, 6, generator=torch.Generator().manual_seed(1),
                         extras={"mask": m}, mask=m)
    stats = table.groupby("scheme")["percent"].agg(["mean", "std"])
    assert (stats["mean"] > 0.1).all()
    gap = abs(stats["mean"].iloc[0] - stats["mean"].iloc[1])
    assert gap < 4 * (stats["std"] ** 2 / 6).sum() ** 0.5  # both unbiased for the same quantity


def test_se_ratio_table_compares_every_kind_with_the_reference(clusters):
    x, y, m = clusters
    samplers = {**SAMPLERS, "Haar 12": lambda B, g: sample_haar(12, batch=B, generator=g)}
    kinds = {"tetrahedral ×2": "design", "Haar 24": "Haar", "Haar 12": "Haar"}
    table = scheme_study(skewed, x, y, VectorAction(), samplers, 8, generator=torch.Generator().manual_seed(2),
                         extras={"mask": m}, mask=m)
    t = se_ratio_table(table, kinds, "Haar", seed=0)
    assert list(t.index) == [12, 24]
    sd = table.groupby("scheme")["L_equiv"].std()
    assert t.loc[24, "Haar: SE"] == pytest.approx(sd["Haar 24"]) and t.loc[24, "design: SE"] == pytest.approx(sd["tetrahedral ×2"])
    assert t.loc[24, "design: SE ratio"] == pytest.approx(sd["Haar 24"] / sd["tetrahedral ×2"])
    assert t.loc[24, "design: 95% CI low"] < t.loc[24, "design: SE ratio"] < t.loc[24, "design: 95% CI high"]
    assert t.loc[12, ["design: SE", "design: SE ratio"]].isna().all()  # no design with 12 elements
    with pytest.raises(ParameterError, match="no kind given"):
        se_ratio_table(table, {"Haar 24": "Haar"}, "Haar", seed=0)
    with pytest.raises(ParameterError, match="reference kind"):
        se_ratio_table(table, kinds, "Sobol", seed=0)


def test_twirled_inference_study_exhaustive_twirl_is_exactly_equivariant(clusters):
    x, y, m = clusters
    G = cube_group()
    post = twirled_inference_study(
        skewed, x, y, VectorAction(), {"cube (24)": lambda B, dev: exhaustive(G, device=dev)},
        lambda B, g: exhaustive(G), generator=torch.Generator().manual_seed(0),
        extras={"mask": m}, mask=m, repeats=1).set_index("twirl")
    assert list(post.index) == ["none", "cube (24)"] and post.loc["cube (24)", "inner_N"] == 24
    assert post.loc["none", "percent"] > 0.1 and post.loc["none", "cost_ratio"] == 1.0
    assert post.loc["cube (24)", "percent"] < 1e-20  # the exact twirl over the evaluation group
    # its loss is the plain model's L_mean over the same group (Jensen: never worse)
    assert post.loc["cube (24)", "L"] == pytest.approx(post.loc["none", "L_mean"], rel=1e-12)
    assert post.loc["cube (24)", "L"] <= post.loc["none", "L"]


def test_checkpoint_split_study_exact_and_subset():
    from equivlib.groups import VectorAction, cube_group, cube_subset16
    from equivlib.studies import checkpoint_split_study

    G = cube_group()
    x = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.randn(5, 4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    W = torch.randn(3, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    models = {0: lambda v: v @ W, 10: lambda v: 2.0 * v}  # 10: exactly equivariant
    load = lambda step: _Wrap(models[step])  # noqa: E731
    r = checkpoint_split_study(load, [0, 10], x, y, VectorAction(), G, Ns=[2, 8], n_reps=3, n_check=8,
                               subset=cube_subset16(), generator=torch.Generator().manual_seed(0))
    assert list(r.table["step"]) == [0, 10]
    # the exact split over the group, computed directly
    Z = torch.stack([((x @ g.T) @ W) @ g for g in G])  # g^-1 f(g x) with g acting as v -> g v on rows
    exact = decompose(Z[None], y, "exhaustive").summary()["percent"]
    assert r.table.loc[0, "exact %"] == pytest.approx(exact, rel=1e-10)
    # the subset split is the plug-in split over exactly those 16 elements
    Z16 = torch.stack([((x @ g.T) @ W) @ g for g in cube_subset16()])
    sub16 = decompose(Z16[None], y, "exhaustive", estimator="plugin").summary()["percent"]
    assert r.table.loc[0, "subset %"] == pytest.approx(sub16, rel=1e-10) and abs(sub16 - exact) > 1e-6
    assert r.table.loc[1, "exact %"] == pytest.approx(0.0, abs=1e-20)
    assert r.table.loc[1, "subset %"] == pytest.approx(0.0, abs=1e-20)
    assert set(r.final["N"]) == {2, 8} and r.n_check == 8 and r.truth["percent"] == r.table.loc[1, "exact %"]
    with pytest.raises(ValueError, match="n_check"):
        checkpoint_split_study(load, [0], x, y, VectorAction(), G, Ns=[2], n_reps=1, n_check=8,
                               generator=torch.Generator().manual_seed(0))
    with pytest.raises(Exception, match="not in the group"):
        checkpoint_split_study(load, [0], x, y, VectorAction(), G, Ns=[8], n_reps=1, n_check=8,
                               subset=G[:2] * -1, generator=torch.Generator().manual_seed(0))


class _Wrap(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, v):
        return self.fn(v)


def test_sweep_table_dip_and_epochs():
    import pandas as pd
    from types import SimpleNamespace

    from equivlib.studies import sweep_table

    def run(percents, n_train=None, batch=4, steps=100):
        mon = pd.DataFrame({"step": [0, 10, 50, 100][:len(percents)], "percent": percents, "L": 1.0})
        return SimpleNamespace(monitor=mon, config=SimpleNamespace(n_train=n_train, batch_size=batch, steps=steps))

    ref = run([10.0, 5.0, 0.5, 0.4])
    small = run([10.0, 0.9, 0.5, 0.4], n_train=8)
    never = run([10.0, 9.0, 8.0, 7.0], batch=1)
    t = sweep_table({("data", "all"): ref, ("data", "8"): small, ("batch", "ref"): ref, ("batch", "1"): never},
                    ref, n_examples=40, dip_factor=10)
    assert list(t["axis"]) == ["batch", "batch", "data", "data"] and t["reference"].tolist() == [True, False, True, False]
    row = t[(t["axis"] == "data") & ~t["reference"]].iloc[0]
    assert row["dip step"] == 10 and row["dip epoch"] == pytest.approx(10 * 4 / 8) and row["epochs"] == pytest.approx(50)
    assert t[(t["axis"] == "data") & t["reference"]].iloc[0]["dip step"] == 50
    assert pd.isna(t[(t["axis"] == "batch") & ~t["reference"]].iloc[0]["dip step"])
    # a monitor with one row per (step, label) is pooled by the curve function; unpooled it is refused
    two = pd.concat([ref.monitor.assign(t=0.1), ref.monitor.assign(t=0.9)])
    labelled = SimpleNamespace(monitor=two, config=ref.config)
    with pytest.raises(ValueError, match="several rows per step"):
        sweep_table({("data", "all"): labelled}, labelled, n_examples=40)
    pooled = sweep_table({("data", "all"): labelled}, labelled, n_examples=40,
                         curve=lambda r: r.monitor[r.monitor["t"] == 0.1].drop(columns="t"))
    assert pooled.iloc[0]["dip step"] == 50


def test_race_table_per_replicate():
    import pandas as pd
    from types import SimpleNamespace

    from equivlib.studies import race_table

    def run(losses, seconds, steps=100):
        mon = pd.DataFrame({"step": [0, 10, 50, 100], "L": losses, "percent": 1.0,
                            "train_seconds": [0.0, *seconds]})
        return SimpleNamespace(monitor=mon, train_seconds=seconds[-1], config=SimpleNamespace(steps=steps))

    slow_good = run([2.0, 1.5, 1.0, 0.5], [2.0, 10.0, 20.0])  # b: twice the time per step, better late
    fast = run([1.0, 0.9, 0.8, 0.7], [1.0, 5.0, 10.0])
    t = race_table([(fast, slow_good), (fast, fast)])
    assert list(t["replicate"]) == [0, 1]
    r = t.iloc[0]
    assert r["speed_ratio"] == pytest.approx(2.0) and r["ms_a"] == pytest.approx(100.0)
    assert r["t_common"] == pytest.approx(10.0) and r["final_b"] == 0.5
    # at 10 s the slow run (step 50) is at 1.0 against the fast run's 0.7: a ahead there
    assert r["L_b"] == pytest.approx(1.0) and r["L_a"] == pytest.approx(0.7) and r["b_ahead"] == "never at the end"
    # over the last doubling (10 s -> 20 s) the slow run halved its loss; the fast one lost 1 - 0.7/0.8 (5 s -> 10 s)
    assert r["late_fall_b"] == pytest.approx(0.5) and r["late_fall_a"] == pytest.approx(1 - 0.7 / 0.8)
    with pytest.raises(ValueError, match="at least one"):
        race_table([])


def test_identity_check_on_a_linear_model():
    from equivlib.studies import identity_check

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(6, 4, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(6, 4, 3, generator=gen, dtype=torch.float64)
    lin = torch.nn.Linear(3, 3, bias=False, dtype=torch.float64)
    s = sample_haar(5, batch=6, generator=gen)
    r = identity_check(lin, x, y, s, VectorAction())
    assert r["max |L-L_mean-L_equiv|"] < 1e-12 and r["min term"] >= 0
    assert r["L"] == pytest.approx(r["L_mean"] + r["L_equiv"], rel=1e-12) and r["percent"] > 0
    # an exactly equivariant model (a multiple of the identity) has no equivariance error
    iso = identity_check(lambda v: 2.0 * v, x, y, s, VectorAction())
    assert iso["L_equiv"] < 1e-25 and iso["percent"] < 1e-20
