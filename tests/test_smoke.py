"""make smoke (tools/smoke.py): the full profile with capped loops, and the estimate read from its ledger."""
import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
spec = importlib.util.spec_from_file_location("smoke", ROOT / "tools" / "smoke.py")
smoke = importlib.util.module_from_spec(spec)
spec.loader.exec_module(smoke)
bb = smoke.bb


def test_estimate_adds_the_missing_steps_and_evaluations(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps({"desc": "run", "steps": 10, "planned_steps": 1000, "step_s": 0.1, "train_s": 1.2,
                                  "evals": 2, "planned_evals": 20, "eval_s": 0.5, "device": "cpu"}) + "\n"
                      + json.dumps({"desc": "no monitor", "steps": 5, "planned_steps": 5, "step_s": 1.0,
                                    "train_s": 5.0, "device": "cpu"}) + "\n")
    loops = smoke.loop_estimates(ledger)
    assert loops[0]["smoke_s"] == pytest.approx(1.2 + 2 * 0.5)
    assert loops[0]["extra_s"] == pytest.approx(990 * 0.1 + 18 * 0.5)
    assert loops[1]["extra_s"] == 0.0 and loops[1]["full_s"] == pytest.approx(5.0)  # ran at its full size
    est = smoke.estimate({"01_a": 30.0, "02_b": 12.0}, loops)
    assert est["full_s"] == pytest.approx(42.0 + 108.0) and est["devices"] == ["cpu"]
    assert smoke.loop_estimates(tmp_path / "missing.jsonl") == []


def test_smoke_executes_the_full_profile_capped_and_estimates_it(tmp_path, monkeypatch):
    for name, sub in [("ROOT", ""), ("CHAPTERS", "chapters"), ("GENERATED", "book/generated"),
                      ("CACHE", "_build/exec-cache"), ("SOURCES", "_build/sources")]:
        monkeypatch.setattr(bb, name, tmp_path / sub)
    monkeypatch.setattr(smoke, "SMOKE", tmp_path / "_build" / "smoke")
    for var in ("EQUIVLIB_SMOKE", "EQUIVLIB_SMOKE_LEDGER", "EQUIVLIB_RUNS"):  # restored after the test
        monkeypatch.setenv(var, "")
    (tmp_path / "chapters").mkdir()
    (tmp_path / "chapters" / "01_x.py").write_text(textwrap.dedent('''\
        # ---
        # jupyter:
        #   jupytext:
        #     text_representation:
        #       extension: .py
        #       format_name: percent
        # ---

        # %% tags=["parameters"]
        PROFILE = "quick"
        SEED = 0
        DEVICE = "cpu"

        # %%
        import torch
        from equivlib.config import by_profile, chapter_setup
        from equivlib.training import train

        device, gen = chapter_setup(globals(), [])
        SIZES = by_profile(PROFILE, quick=dict(steps=3, reps=2), full=dict(steps=500, reps=1000), smoke=dict(reps=3))
        assert PROFILE == "full" and SIZES["reps"] == 3 and SIZES["steps"] == 4
        model = torch.nn.Linear(3, 1)
        data = {"x": torch.randn(16, 3, generator=gen), "y": torch.randn(16, 1, generator=gen)}
        log = train(model, data, steps=SIZES["steps"], batch_size=4, forward=lambda m, b: m(b["x"]),
                    loss=lambda p, b: ((p - b["y"]) ** 2).mean(), progress=False)
        assert len(log) == 4
        '''))
    assert smoke.main(["--steps", "4", "--device", "cpu", "--jobs", "1"]) == 0
    est = json.loads((smoke.SMOKE / "estimate.json").read_text())
    (loop,) = est["loops"]
    assert loop["steps"] == 4 and loop["planned_steps"] == 500 and est["devices"] == ["cpu"]
    assert est["full_s"] == pytest.approx(est["pages_s"]["01_x"] + 496 * loop["step_s"])
    assert (smoke.SMOKE / "generated" / "01_x.ipynb").is_file() and not (tmp_path / "book").exists()
    with pytest.raises(bb.BuildError, match="--steps"):
        smoke.main(["--steps", "0"])
