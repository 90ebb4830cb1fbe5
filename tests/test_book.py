"""Chapter helpers (equivlib.book): verdicts and claims tables."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from equivlib.book import CLAIM_COLUMNS, Claim, claims_table, glue_claims, verdict


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
