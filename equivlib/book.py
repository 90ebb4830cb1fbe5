"""Helpers for chapters: glue values, computed verdicts and claims tables.

Every chapter glues through :func:`glue`, words its verdicts with :func:`verdict`
and builds its "What reproduced" table with :func:`claims_table` /
:func:`glue_claims`, so that all chapters report results the same way and a
verdict always comes from the measured values.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd
import torch

__all__ = ["glue", "verdict", "Claim", "claims_table", "glue_claims", "CLAIM_COLUMNS"]

CLAIM_COLUMNS = ("claim", "ours", "verdict")


def glue(name: str, value, display: bool = False):
    """``myst_nb.glue`` that stores plain Python numbers and closes glued figures.

    numpy and torch scalars are converted with ``.item()`` so that
    ``{glue:text}`name:.2f``` can format them; strings are glued as Markdown
    (quote them with ``{glue:md}`name```, which shows no quotation marks); a
    glued matplotlib figure is closed afterwards so that it is shown once,
    where the prose puts it.
    """
    from matplotlib import pyplot as plt
    from matplotlib.figure import Figure
    from myst_nb import glue as _glue

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"glue {name!r}: only scalar tensors can be glued, got shape {tuple(value.shape)}")
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str):
        from IPython.display import Markdown

        _glue(name, Markdown(value), display=display)
        return None
    _glue(name, value, display=display)
    if isinstance(value, Figure):
        plt.close(value)
    return None  # so that a glue call at the end of a cell displays nothing


def verdict(ok, partly=False, *, yes: str = "reproduced", no: str = "not at this scale",
            partial: str = "partly") -> str:
    """The word for a checked claim, computed from booleans.

    ``ok`` true gives ``yes``; otherwise ``partly`` true gives ``partial`` and
    false gives ``no``.  ``no="not reproduced"`` is for claims that this
    chapter's scale can decide; the default ``"not at this scale"`` is for
    claims about regimes (steps, data) that the profile does not reach.
    ``ok`` and ``partly`` must be plain or numpy/torch booleans, never ``None``.
    """
    for name, v in (("ok", ok), ("partly", partly)):
        if isinstance(v, torch.Tensor):
            if v.numel() != 1:
                raise ValueError(f"verdict: {name} must be a single boolean, got shape {tuple(v.shape)}")
            v = bool(v.item())
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"verdict: {name} must be a boolean, got {type(v).__name__} {v!r}")
    return yes if bool(ok) else (partial if bool(partly) else no)


@dataclass(frozen=True)
class Claim:
    """One row of a chapter's "What reproduced" table: the claim, our number and the verdict."""

    claim: str
    ours: str
    verdict: str

    def __post_init__(self):
        for f in CLAIM_COLUMNS:
            v = getattr(self, f)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"Claim.{f} must be a non-empty string, got {v!r}")


def claims_table(rows: Iterable[Claim | dict], *, claim_header: str = "claim") -> pd.DataFrame:
    """The claims table of a chapter, one row per :class:`Claim` (or dict with the same keys).

    The columns are ``claim``, ``ours`` and ``verdict``; ``claim_header`` renames the first
    (e.g. to name the paper the claims come from).
    """
    claims = [r if isinstance(r, Claim) else Claim(**r) for r in rows]
    if not claims:
        raise ValueError("claims_table needs at least one claim")
    df = pd.DataFrame([{f: getattr(c, f) for f in CLAIM_COLUMNS} for c in claims], columns=list(CLAIM_COLUMNS))
    return df.rename(columns={"claim": claim_header})


def glue_claims(name: str, table: pd.DataFrame) -> None:
    """Glue a claims table (from :func:`claims_table`) as an index-free table."""
    missing = [c for c in CLAIM_COLUMNS[1:] if c not in table.columns]
    if missing:
        raise ValueError(f"glue_claims {name!r}: the table has no column(s) {missing}; build it with claims_table")
    glue(name, table.style.hide(axis="index"))

