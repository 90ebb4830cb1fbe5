"""Shared figure style for the book."""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

__all__ = ["set_style", "new_figure", "log2_axis", "landscape_panel", "percent_panel", "sweep_panel"]


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


def landscape_panel(ax, x, y, Z, *, title: str = "", xlabel: str = "", ylabel: str = "", points=(),
                    markers=("*", "X", "P"), cbar_label: str = r"$\log_{10}$ loss", floor: float = 1e-6,
                    cmap: str = "viridis", aspect: str = "equal"):
    """A 2-D loss landscape on a log scale, with optional point markers and a colorbar.

    Parameters
    ----------
    x, y : array-like or tensors, shapes ``(nx,)`` and ``(ny,)``
    Z : array-like or tensor, shape ``(ny, nx)`` (rows indexed by ``y``), non-negative;
        ``log10(Z + floor)`` is drawn.
    points : sequence of ``(x, y)`` pairs, e.g. minima; the i-th gets ``markers[i]``
        (the last marker repeats), white with a black edge.
    aspect : ``"equal"`` (same scale on both axes) or ``"auto"``.

    Returns
    -------
    The ``QuadMesh`` (for further colorbars or colour limits).
    """
    import numpy as np

    def _np(v):
        return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)

    im = ax.pcolormesh(_np(x), _np(y), np.log10(_np(Z) + floor), cmap=cmap, shading="auto", rasterized=True)
    for i, (px, py) in enumerate(points):
        ax.plot(float(px), float(py), markers[min(i, len(markers) - 1)], ms=12, mec="k", mfc="w")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.figure.colorbar(im, ax=ax, label=cbar_label)
    ax.set_aspect(aspect)
    return im


def percent_panel(ax, curves, *, threshold: float | None = None, band: bool = False, colors=None, styles=None,
                  legend_size: float = 7, ylabel: str = "% of held-out loss from equivariance error") -> None:
    """Percent of the held-out loss from equivariance error against training step, one line per curve.

    ``curves`` maps a legend label to a monitor table (columns ``step``,
    ``percent`` and, with ``band=True``, ``se_percent``: the band is ±2
    standard errors).  Step 0 is left out (log axes).  ``colors`` and
    ``styles`` map labels to a colour and to extra ``ax.plot`` keywords
    (default colours ``C0``, ``C1``, …; default markers ``o``).  A dashed grey
    line marks ``threshold``.
    """
    for i, (label, curve) in enumerate(curves.items()):
        c = curve[curve["step"] > 0]
        color = (colors or {}).get(label, f"C{i}")
        ax.plot(c["step"], c["percent"], label=label, color=color, **{"marker": "o", "ms": 3, **(styles or {}).get(label, {})})
        if band:
            lo = (c["percent"] - 2 * c["se_percent"]).clip(lower=1e-4)
            ax.fill_between(c["step"], lo, c["percent"] + 2 * c["se_percent"], alpha=0.25, color=color)
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="grey", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="training step", ylabel=ylabel)
    if len(curves) > 1:
        ax.legend(fontsize=legend_size)


def sweep_panel(ax, table, axis: str, *, threshold: float | None = None, title: str | None = None) -> None:
    """One axis of a :func:`~equivlib.studies.sweep_table`: its runs' percent curves, the reference in thick black.

    ``table`` needs the columns ``axis``, ``setting``, ``reference`` and ``_curve``; the
    reference's label gains " (reference)".  ``title`` defaults to ``axis``.
    """
    sub = table[table["axis"] == axis]
    if sub.empty:
        raise ValueError(f"the sweep table has no runs on axis {axis!r}; it has {sorted(set(table['axis']))}")
    labels = sub["setting"] + sub["reference"].map({True: " (reference)", False: ""})
    percent_panel(ax, dict(zip(labels, sub["_curve"])), threshold=threshold, ylabel="% of held-out loss",
                  colors={lab: "black" for lab, ref in zip(labels, sub["reference"]) if ref},
                  styles={lab: {"ms": 2.5, "lw": 2.2 if ref else 1.4} for lab, ref in zip(labels, sub["reference"])})
    ax.set_title(axis if title is None else title)
