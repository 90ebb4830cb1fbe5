"""Training-curve statistics (equivlib.curves) on small hand-made monitor tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from equivlib import curves


def curve(steps, percent, **cols):
    return pd.DataFrame({"step": steps, "percent": percent, **cols})


def test_settle_step_cases():
    c = curve([0, 1, 10, 100], [5.0, 3.0, 1.0, 0.5])
    assert curves.settle_step(c, 2.0) == 10
    # a later evaluation back above the threshold moves the settle step
    c2 = curve([0, 1, 10, 100, 200], [5.0, 1.0, 3.0, 0.5, 0.4])
    assert curves.settle_step(c2, 2.0) == 100
    # never below at the end
    assert curves.settle_step(curve([0, 10], [1.0, 3.0]), 2.0) is None
    # below from the start: the first evaluation
    assert curves.settle_step(curve([0, 10], [1.0, 0.5]), 2.0) == 0
    # start=1 ignores the initialisation
    assert curves.settle_step(curve([0, 5, 10], [9.0, 1.0, 0.5]), 2.0, start=1) == 5
    # unsorted input is sorted first
    assert curves.settle_step(curve([100, 0, 10, 1], [0.5, 5.0, 1.0, 3.0]), 2.0) == 10


def test_settle_text_matches_step():
    assert curves.settle_text(curve([0, 1, 10], [5.0, 3.0, 1.0]), 2.0) == "settled below 2 % at step 10"
    assert "from initialisation on" in curves.settle_text(curve([0, 1], [1.0, 1.0]), 2.0)
    assert curves.settle_text(curve([0, 7], [1.0, 3.0]), 2.0) == "did not settle below 2 % within 7 steps"


def test_dip_step():
    c = curve([0, 1, 5, 20], [10.0, 4.0, 0.9, 2.0])
    assert curves.dip_step(c, 10) == 5
    assert curves.dip_step(c, 2) == 1
    assert curves.dip_step(curve([0, 1], [10.0, 9.0]), 10) is None
    with pytest.raises(ValueError, match="dip factor"):
        curves.dip_step(c, 1)


def test_check_curve_errors():
    with pytest.raises(ValueError, match="no column"):
        curves.settle_step(pd.DataFrame({"step": [0]}), 2.0)
    with pytest.raises(ValueError, match="empty"):
        curves.settle_step(curve([], []), 2.0)
    with pytest.raises(ValueError, match="pool_over"):
        curves.settle_step(pd.DataFrame({"step": [0, 0], "t": [0.1, 0.5], "percent": [1.0, 2.0]}), 2.0)
    with pytest.raises(TypeError):
        curves.settle_step([1, 2], 2.0)


def flow_table(pooled_se=0.7):
    rows = []
    for step in (0, 10):
        block = []
        for t, L, Le, se in ((0.1, 2.0, 0.2, 0.5), (0.9, 1.0, 0.3, 1.0)):
            Le = Le / (1 + step)
            block.append({"step": step, "t": t, "L": L, "L_mean": L - Le, "L_equiv": Le,
                          "percent": 100 * Le / L, "se_percent": se})
        pooled = 100 * sum(r["L_equiv"] for r in block) / sum(r["L"] for r in block)
        rows += [{**r, "pooled_percent": pooled, "pooled_se_percent": pooled_se} for r in block]
    return pd.DataFrame(rows)


def test_pool_over_weighted_percent_and_recorded_se():
    pooled = curves.pool_over(flow_table(), "t")
    assert list(pooled["step"]) == [0, 10]
    r = pooled.iloc[0]
    assert r["percent"] == pytest.approx(100 * (0.2 + 0.3) / 3.0)
    assert r["L"] == pytest.approx(1.5)
    # the SE is the monitor's delta-method one over units, not a combination of the per-time SEs
    assert r["se_percent"] == 0.7
    # the pooled percent is a weighted mean of the per-time percents
    per_t = flow_table()[lambda d: d.step == 0]
    assert min(per_t["percent"]) <= r["percent"] <= max(per_t["percent"])


def test_pool_over_rejects_ragged_missing_and_inconsistent():
    t = flow_table().iloc[:-1]
    with pytest.raises(ValueError, match="different numbers"):
        curves.pool_over(t, "t")
    with pytest.raises(ValueError, match="pool_units"):
        curves.pool_over(flow_table().drop(columns=["pooled_se_percent"]), "t")
    bad = flow_table()
    bad.loc[0, "pooled_percent"] += 1.0
    with pytest.raises(ValueError, match="disagree"):
        curves.pool_over(bad, "t")
    bad = flow_table()
    bad["pooled_percent"] += 1.0
    with pytest.raises(ValueError, match="differs from the recorded"):
        curves.pool_over(bad, "t")


def test_split_by():
    parts = curves.split_by(flow_table(), "t")
    assert sorted(parts) == [0.1, 0.9]
    assert list(parts[0.9]["step"]) == [0, 10] and "t" not in parts[0.9]
    assert curves.settle_step(parts[0.9], 20.0) == 10


def test_curve_summary_and_after_dip():
    c = pd.DataFrame({"step": [0, 10, 100], "percent": [40.0, 2.0, 10.0], "se_percent": [1.0, 0.1, 0.5],
                      "L": [1.0, 0.5, 0.1], "L_mean": [0.6, 0.49, 0.09], "L_equiv": [0.4, 0.01, 0.01]})
    s = curves.curve_summary(c, 5.0)
    assert (s["pct0"], s["pct_min"], s["step_min"], s["pct_final"], s["se_final"]) == (40.0, 2.0, 10, 10.0, 0.5)
    assert s["settle"] is None and s["last_step"] == 100
    text = curves.after_dip_text(c)
    assert "rose to 10.00 % by step 100" in text and "fell 5.4-fold" in text and "factor 1.00" in text
    c2 = c.assign(percent=[40.0, 20.0, 1.0])
    assert curves.after_dip_text(c2) == "the percent is lowest at the last evaluation, 1.00 %"


def timed(seconds, L):
    return pd.DataFrame({"step": np.arange(len(L)) * 10, "percent": 1.0, "L": L, "train_seconds": seconds})


def test_loss_at_and_time_to():
    c = timed([0.0, 1.0, 10.0], [1.0, 0.5, 0.05])
    assert curves.loss_at(c, 1.0) == pytest.approx(0.5)
    # log-log interpolation: halfway in log time is the geometric mean of the losses
    assert curves.loss_at(c, 10 ** 0.5) == pytest.approx((0.5 * 0.05) ** 0.5)
    assert curves.time_to(c, 0.4) == 10.0
    assert curves.time_to(c, 0.01) is None
    with pytest.raises(ValueError):
        curves.loss_at(c, 0.0)


def test_crossover_cases():
    a = timed([0.0, 1.0, 10.0], [1.0, 0.5, 0.2])
    assert curves.crossover(a, timed([0.0, 1.0, 10.0], [1.0, 0.4, 0.1]))["b_ahead"] == "always"
    assert curves.crossover(a, timed([0.0, 1.0, 10.0], [1.0, 0.6, 0.3]))["b_ahead"] == "never at the end"
    r = curves.crossover(a, timed([0.0, 1.0, 20.0], [1.0, 0.8, 0.1]))
    assert r["b_ahead"] == "from" and 1.0 < r["t_cross"] < 10.0 and r["t_common"] == 10.0
    assert r["L_a"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="overlap"):
        curves.crossover(timed([0.0, 1.0], [1.0, 0.5]), timed([0.0, 5.0, 6.0], [1.0, 0.5, 0.4]))
