"""Shared figure panels (equivlib.plotting)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

from equivlib.plotting import landscape_panel, percent_panel, sweep_panel


def test_landscape_panel_draws_and_returns_the_mappable():
    ab = torch.linspace(-3, 3, 21, dtype=torch.float64)
    B, A = torch.meshgrid(ab, ab, indexing="ij")
    Z = (A - 1) ** 2 * (A + 1) ** 2 + B**2  # two minima, at (±1, 0)
    ax = Figure().add_subplot()
    im = landscape_panel(ax, ab, ab, Z, title="t", xlabel="a", ylabel="b", points=[(1.0, 0.0), (-1.0, 0.0)],
                         cbar_label="log loss")
    assert isinstance(im, QuadMesh)
    assert im.get_array().size == 21 * 21
    assert im.get_array().max() == pytest.approx(math.log10(Z.max().item() + 1e-6))
    assert [ln.get_marker() for ln in ax.get_lines()] == ["*", "X"]
    assert ax.get_title() == "t" and ax.get_aspect() == 1.0
    assert ax.figure.axes[-1].get_ylabel() == "log loss"  # the colorbar


def curve(percent, se=0.1):
    return pd.DataFrame({"step": [0, 1, 10, 100], "percent": percent, "se_percent": se})


def test_percent_panel_lines_band_threshold_and_styles():
    ax = Figure().add_subplot()
    percent_panel(ax, {"a": curve([50.0, 10.0, 2.0, 1.0]), "ref": curve([40.0, 4.0, 1.0, 0.5])}, threshold=2.0,
                  band=True, colors={"ref": "black"}, styles={"ref": {"lw": 3}})
    lines = ax.get_lines()
    data = [ln for ln in lines if ln.get_label() in ("a", "ref")]
    assert [ln.get_label() for ln in data] == ["a", "ref"]
    np.testing.assert_array_equal(data[0].get_xdata(), [1, 10, 100])  # step 0 left out on log axes
    assert data[1].get_color() == "black" and data[1].get_linewidth() == 3 and data[0].get_marker() == "o"
    assert any(np.allclose(ln.get_ydata(), 2.0) for ln in lines if ln not in data)  # the threshold
    assert len(ax.collections) == 2  # one ±2 SE band per curve
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log" and ax.get_legend() is not None


def test_percent_panel_single_curve_has_no_legend_and_needs_se_for_band():
    ax = Figure().add_subplot()
    percent_panel(ax, {"only": curve([5.0, 4.0, 3.0, 2.0])})
    assert ax.get_legend() is None and len(ax.collections) == 0
    with pytest.raises(KeyError):
        percent_panel(Figure().add_subplot(), {"x": curve([1.0, 1, 1, 1]).drop(columns="se_percent")}, band=True)


def test_sweep_panel_draws_one_axis_with_the_reference_in_black():
    table = pd.DataFrame({"axis": ["data", "data", "batch"], "setting": ["all", "8", "1"],
                          "reference": [True, False, False],
                          "_curve": [curve([9.0, 3.0, 1.0, 0.5]), curve([9.0, 1.0, 0.6, 0.5]), curve([1.0, 1, 1, 1])]})
    ax = Figure().add_subplot()
    sweep_panel(ax, table, "data", threshold=2.0)
    data = {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}
    assert set(data) == {"all (reference)", "8"} and ax.get_title() == "data"
    assert data["all (reference)"].get_color() == "black" and data["all (reference)"].get_linewidth() == 2.2
    assert data["8"].get_linewidth() == 1.4
    sweep_panel(ax, table, "batch", title="custom")
    assert ax.get_title() == "custom"
    with pytest.raises(ValueError, match="no runs on axis 'optimiser'"):
        sweep_panel(ax, table, "optimiser")
