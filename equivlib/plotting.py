"""Shared figure style for the book."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

__all__ = ["set_style", "new_figure", "log2_axis"]


def set_style() -> None:
    """Seaborn ``ticks`` style with a colour-blind palette and book-sized fonts."""
    sns.set_theme(context="notebook", style="ticks", palette="colorblind", font_scale=0.95)
    plt.rcParams.update({"figure.dpi": 110, "savefig.dpi": 150, "axes.spines.top": False,
                         "axes.spines.right": False, "figure.constrained_layout.use": True})


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2, **kw):
    """``plt.subplots`` with a per-panel size in inches."""
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False, **kw)


def log2_axis(ax, axis: str = "x") -> None:
    """Base-2 log scale with plain integer tick labels (for numbers of rotations, sizes…)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    getattr(ax, f"set_{axis}scale")("log", base=2)
    a = getattr(ax, f"{axis}axis")
    a.set_major_formatter(ScalarFormatter())
    a.set_minor_formatter(NullFormatter())
