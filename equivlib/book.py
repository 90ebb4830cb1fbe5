"""Helpers for chapters: glue values so that the prose can quote them."""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["glue"]


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
