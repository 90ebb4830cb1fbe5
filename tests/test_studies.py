"""Estimator studies (equivlib.studies)."""
import pytest
import torch

from equivlib.studies import resampling_study
from equivlib.twirl import decompose


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
