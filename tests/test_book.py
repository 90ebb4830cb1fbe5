"""Chapter helpers (equivlib.book): verdicts, claims tables, headlines and the landing page's reading of them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from equivlib.book import (CLAIM_COLUMNS, Claim, chapter_summaries, claims_table, findings_table, glue_claims,
                           glue_headline, read_glue, tally, verdict)


def test_verdict_words():
    assert verdict(True) == "reproduced"
    assert verdict(False) == "not at this scale"
    assert verdict(False, partly=True) == "partly"
    assert verdict(True, partly=True) == "reproduced"
    assert verdict(False, no="not reproduced") == "not reproduced"
    assert verdict(np.bool_(True), yes="seen", no="not seen") == "seen"
    assert verdict(torch.tensor(False), yes="seen", no="not seen") == "not seen"


def test_verdict_rejects_non_booleans():
    with pytest.raises(TypeError, match="boolean"):
        verdict(None)
    with pytest.raises(TypeError, match="boolean"):
        verdict(0.5)
    with pytest.raises(TypeError, match="partly"):
        verdict(False, partly="yes")
    with pytest.raises(ValueError, match="single boolean"):
        verdict(torch.tensor([True, False]))


def test_claims_table_columns_and_header():
    t = claims_table([Claim("a claim", "our number", "reproduced"),
                      {"claim": "another", "ours": "1.0", "verdict": "partly"}])
    assert list(t.columns) == list(CLAIM_COLUMNS)
    assert list(t["verdict"]) == ["reproduced", "partly"]
    t2 = claims_table([Claim("a", "b", "c")], claim_header="claim (paper)")
    assert list(t2.columns) == ["claim (paper)", "ours", "verdict"]


def test_claims_table_errors():
    with pytest.raises(ValueError, match="at least one"):
        claims_table([])
    with pytest.raises(ValueError, match="Claim.ours"):
        Claim("a claim", "", "reproduced")
    with pytest.raises(TypeError):
        claims_table([{"claim": "a", "ours": "b"}])
    with pytest.raises(ValueError, match="no column"):
        glue_claims("x", claims_table([Claim("a", "b", "c")]).drop(columns=["verdict"]))


RECORD = "application/papermill.record/"


@pytest.fixture
def glued(monkeypatch):
    """Record what the helpers glue, as myst_nb would store it in the notebook (display_data outputs)."""
    import myst_nb
    from IPython.core.formatters import DisplayFormatter

    outputs = []
    fmt = DisplayFormatter()

    def fake_glue(name, obj, display=True):
        data, _ = fmt.format(obj)
        outputs.append({"output_type": "display_data", "metadata": {"scrapbook": {"name": name, "mime_prefix": RECORD}},
                        "data": {RECORD + k: v for k, v in data.items()}})

    monkeypatch.setattr(myst_nb, "glue", fake_glue)
    return outputs


def write_notebook(path, outputs, title="Chapter one", png=True):
    import base64
    import io

    import nbformat
    from matplotlib.figure import Figure

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("pass")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    if png:
        buf = io.BytesIO()
        Figure(figsize=(1, 1)).savefig(buf, format="png")
        cell.outputs.append(nbformat.from_dict({
            "output_type": "display_data", "metadata": {"scrapbook": {"name": "ch1-fig", "mime_prefix": RECORD}},
            "data": {RECORD + "image/png": base64.b64encode(buf.getvalue()).decode(), RECORD + "text/plain": "<fig>"}}))
    nb.cells = [nbformat.v4.new_markdown_cell(f"some text\n\n# {title}\n\nmore"), cell]
    nbformat.validate(nb)  # what the helpers glue must be storable in a notebook (papermill validates each output)
    nbformat.write(nb, path)
    return path


def test_tally_counts_verdicts_most_frequent_first():
    t = claims_table([Claim("a", "1", "partly"), Claim("b", "2", "reproduced"), Claim("c", "3", "reproduced")])
    assert tally(t) == "2 reproduced, 1 partly"
    with pytest.raises(ValueError, match="verdict"):
        tally(t.drop(columns="verdict"))


def test_headline_and_claims_round_trip_to_the_landing_page(glued, tmp_path):
    claims = claims_table([Claim("split is exact", "1e-16", "reproduced"), Claim("dip", "0.1 %", "partly")],
                          claim_header="claim (Shen et al.)")
    glue_claims("ch1-claims", claims)
    glue_headline("ch1", question="Does it split?", answer="It splits to 1e-16.", figure="ch1-fig")
    nb = write_notebook(tmp_path / "01_one.ipynb", glued)
    g = read_glue(nb)
    assert {"ch1-claims", "ch1-claims-data", "ch1-headline", "ch1-fig"} <= set(g)
    (s,) = chapter_summaries([nb])
    assert (s.doc, s.prefix, s.title) == ("01_one", "ch1", "Chapter one")
    assert (s.question, s.answer, s.figure) == ("Does it split?", "It splits to 1e-16.", "ch1-fig")
    assert s.figure_png.startswith(b"\x89PNG") and s.claims_source == "claim (Shen et al.)"
    assert s.claims.to_dict("records") == [{"claim": "split is exact", "ours": "1e-16", "verdict": "reproduced"},
                                           {"claim": "dip", "ours": "0.1 %", "verdict": "partly"}]
    both = findings_table([s, s])
    assert list(both.columns) == ["chapter", *CLAIM_COLUMNS] and len(both) == 4
    assert set(both["chapter"]) == {"Chapter one"}


def test_landing_page_names_what_a_chapter_is_missing(glued, tmp_path):
    with pytest.raises(FileNotFoundError, match="no executed notebook"):
        chapter_summaries([tmp_path / "nope.ipynb"])
    glue_claims("ch2-claims", claims_table([Claim("a", "b", "c")]))
    with pytest.raises(ValueError, match="02_two.ipynb: expected one glued chN-headline"):
        chapter_summaries([write_notebook(tmp_path / "02_two.ipynb", glued)])
    glue_headline("ch2", question="q", answer="a", figure="ch2-missing")
    with pytest.raises(ValueError, match="headline figure 'ch2-missing' is not a glued PNG"):
        chapter_summaries([write_notebook(tmp_path / "02_two.ipynb", glued)])
    with pytest.raises(ValueError, match="findings_table needs at least one chapter"):
        findings_table([])


def test_glue_headline_checks_its_arguments(glued):
    with pytest.raises(ValueError, match="prefix must look like 'ch1'"):
        glue_headline("chapter1", question="q", answer="a", figure="chapter1-fig")
    with pytest.raises(ValueError, match="answer must be a non-empty string"):
        glue_headline("ch1", question="q", answer=" ", figure="ch1-fig")
    with pytest.raises(ValueError, match="not one of this chapter's glue keys"):
        glue_headline("ch1", question="q", answer="a", figure="ch2-fig")
    assert glued == []
