"""Helpers for chapters: glue values, computed verdicts, claims tables and the landing page.

Every chapter glues through :func:`glue`, words its verdicts with :func:`verdict`
and builds its "What reproduced" table with :func:`claims_table` /
:func:`glue_claims`, so that all chapters report results the same way and a
verdict always comes from the measured values.  :func:`glue_headline` stores a
chapter's question, computed one-sentence answer and chosen figure; the landing
page reads them, and every chapter's claims, back from the executed notebooks
(:func:`read_glue`, :func:`chapter_summaries`, :func:`findings_table`), so that
nothing is typed twice.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import torch

__all__ = ["glue", "verdict", "Claim", "claims_table", "glue_claims", "CLAIM_COLUMNS", "GLUE_JSON", "glue_headline", "read_glue",
           "ChapterSummary", "chapter_summaries", "findings_table", "tally"]

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


def tally(table: pd.DataFrame) -> str:
    """The verdicts of a claims table counted, most frequent first: ``"4 reproduced, 2 partly"``."""
    if "verdict" not in table.columns:
        raise ValueError("tally needs a claims table (from claims_table) with a 'verdict' column")
    return ", ".join(f"{n} {v}" for v, n in table["verdict"].value_counts(sort=True).items())


#: the mime type of data glued for the landing page: a ``+json`` type, so that notebooks store it
#: as an object under myst_nb's record prefix (nbformat accepts objects only for ``application/...json``)
GLUE_JSON = "application/vnd.equivlib+json"


class _GluedData:
    def __init__(self, value):
        self.value = json.loads(json.dumps(value))

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {GLUE_JSON: self.value, "text/plain": json.dumps(self.value, ensure_ascii=False)}


def _glue_json(name: str, value) -> None:
    """Glue JSON-serialisable data (:data:`GLUE_JSON`): read back by :func:`read_glue`, never shown."""
    from myst_nb import glue as _glue

    _glue(name, _GluedData(value), display=False)


def glue_claims(name: str, table: pd.DataFrame) -> None:
    """Glue a claims table (from :func:`claims_table`) as an index-free table.

    Its rows are also glued as data under ``{name}-data`` for the landing page's
    table of every chapter's claims (:func:`chapter_summaries`).
    """
    missing = [c for c in CLAIM_COLUMNS[1:] if c not in table.columns]
    if missing:
        raise ValueError(f"glue_claims {name!r}: the table has no column(s) {missing}; build it with claims_table")
    glue(name, table.style.hide(axis="index"))
    records = table.rename(columns={table.columns[0]: "claim"})[list(CLAIM_COLUMNS)].to_dict("records")
    _glue_json(f"{name}-data", {"source": str(table.columns[0]), "rows": records})


_PREFIX = re.compile(r"^ch\d+$")


def glue_headline(prefix: str, *, question: str, answer: str, figure: str) -> None:
    """What the landing page shows of a chapter, glued as ``{prefix}-headline``.

    ``question`` is what the chapter asks; ``answer`` one sentence built from the
    chapter's computed values (so it changes when they do); ``figure`` the glue key
    of one of the chapter's figures, shown small beside the answer.
    """
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise ValueError(f"glue_headline: prefix must look like 'ch1', got {prefix!r}")
    for what, v in (("question", question), ("answer", answer), ("figure", figure)):
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"glue_headline {prefix!r}: {what} must be a non-empty string, got {v!r}")
    if not figure.startswith(f"{prefix}-"):
        raise ValueError(f"glue_headline {prefix!r}: figure {figure!r} is not one of this chapter's glue keys")
    _glue_json(f"{prefix}-headline", {"question": question, "answer": answer, "figure": figure})


_RECORD = "application/papermill.record/"


def _read_notebook(path):
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no executed notebook at {path}")
    return nbformat.read(path, as_version=4)


def read_glue(path) -> dict[str, dict]:
    """Every value glued in an executed notebook: ``{key: {mime type: data}}`` (later glues of a key win)."""
    return _glued(_read_notebook(path))


def _glued(nb) -> dict[str, dict]:
    found = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {}).get("scrapbook", {})
            if "name" in meta:
                prefix = meta.get("mime_prefix", "")
                found[meta["name"]] = {k[len(prefix):] if k.startswith(prefix) else k: v
                                       for k, v in out.get("data", {}).items()}
    return found


@dataclass(frozen=True)
class ChapterSummary:
    """A chapter as the landing page shows it (read from its executed notebook)."""

    doc: str                 # the notebook's stem, e.g. ``01_loss_decomposition``
    prefix: str              # its glue prefix, e.g. ``ch1``
    title: str               # its first heading
    question: str
    answer: str
    figure: str              # the glue key of the chosen figure
    figure_png: bytes
    claims: pd.DataFrame     # claim | ours | verdict
    claims_source: str       # the header of the claim column (whose claims they are)


def _title(nb, name: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, flags=re.M)
            if m:
                return m.group(1).strip()
    raise ValueError(f"{name} has no top-level heading")


def chapter_summaries(paths: Iterable) -> list[ChapterSummary]:
    """One :class:`ChapterSummary` per executed chapter notebook, in the given order.

    Each chapter must have glued one headline (:func:`glue_headline`, key ``chN-headline``),
    the figure it names, and one claims table (:func:`glue_claims`, key ``chN-claims``);
    a chapter missing any of them raises ``ValueError`` naming it and the key.
    """
    import base64

    out = []
    for p in map(Path, paths):
        nb = _read_notebook(p)
        g = _glued(nb)
        heads = [k for k in g if k.endswith("-headline") and _PREFIX.match(k[:-len("-headline")])]
        if len(heads) != 1:
            raise ValueError(f"{p.name}: expected one glued chN-headline (glue_headline), found {heads}")
        prefix = heads[0][:-len("-headline")]
        head = g[heads[0]].get(GLUE_JSON)
        claims = g.get(f"{prefix}-claims-data", {}).get(GLUE_JSON)
        if head is None or claims is None:
            raise ValueError(f"{p.name}: {prefix}-headline or {prefix}-claims-data is missing or not JSON "
                             "(glue them with glue_headline and glue_claims)")
        fig = g.get(head["figure"], {}).get("image/png")
        if fig is None:
            raise ValueError(f"{p.name}: the headline figure {head['figure']!r} is not a glued PNG figure")
        out.append(ChapterSummary(p.stem, prefix, _title(nb, p.name), head["question"], head["answer"], head["figure"],
                                  base64.b64decode(fig), pd.DataFrame(claims["rows"], columns=list(CLAIM_COLUMNS)),
                                  claims["source"]))
    return out


def findings_table(summaries: Iterable[ChapterSummary]) -> pd.DataFrame:
    """Every chapter's claims in one table: ``chapter | claim | ours | verdict``."""
    frames = [s.claims.assign(chapter=s.title)[["chapter", *CLAIM_COLUMNS]] for s in summaries]
    if not frames:
        raise ValueError("findings_table needs at least one chapter")
    return pd.concat(frames, ignore_index=True)

