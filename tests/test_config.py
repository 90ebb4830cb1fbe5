"""Tests for equivlib.config: parameters, profiles, seeds (derived seeds pinned: they choose the data), devices."""
import os
import numpy as np
import pytest
import torch

import json
import pickle

from equivlib.config import (Capped, ParameterError, by_profile, capped, chapter_setup, check_parameters,
                             derived_generator, derived_seed, resolve_device, seed_everything, set_threads,
                             smoke_report, smoke_steps)


def test_config_parameters():
    check_parameters({"PROFILE": "quick", "SEED": 0, "DEVICE": "cpu"}, ["PROFILE", "SEED", "DEVICE"])
    with pytest.raises(ParameterError, match="unknown parameter.*N_ROTATIONS"):
        check_parameters({"PROFILE": "quick", "SEED": 0, "DEVICE": "cpu", "N_ROTATIONS": 3},
                         ["PROFILE", "SEED", "DEVICE"])
    with pytest.raises(ParameterError, match="does not define"):
        check_parameters({"PROFILE": "quick"}, ["PROFILE", "SEED"])
    with pytest.raises(ParameterError, match="PROFILE"):
        by_profile("medium", quick=1, full=2)
    assert by_profile("full", quick=1, full=2) == 2
    with pytest.raises(ParameterError, match="SEED"):
        seed_everything(-1)
    with pytest.raises(ParameterError, match="DEVICE"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_chapter_setup_rejects_injected_names_but_allows_interactive_reruns():
    from equivlib.config import chapter_setup

    ns = {"PROFILE": "quick", "SEED": 0, "DEVICE": "cpu", "N_GRID": [2, 4], "BOGUS": 1}
    with pytest.raises(ParameterError, match="BOGUS"):
        chapter_setup(ns, known=["N_GRID"])
    ns.pop("BOGUS")
    chapter_setup(ns, known=["N_GRID"])
    ns["SIZES"] = {"n": 1}  # a constant the chapter defines after the setup cell
    chapter_setup(ns, known=["N_GRID"])  # re-running the setup cell in the same kernel
    ns["PROFILE"] = "huge"
    with pytest.raises(ParameterError, match="PROFILE"):
        chapter_setup(ns, known=["N_GRID"])


def test_derived_seed_values_are_pinned():
    """The data sets are drawn with these seeds (e.g. the committed samples' molecules and splits):
    a change in derived_seed changes the data of every profile."""
    assert derived_seed(0, 303) == 2028360280  # the force data's stored rotation check
    legacy = lambda *v: int(np.random.SeedSequence(list(v)).generate_state(1, dtype=np.uint32)[0]  # noqa: E731
                            % (2**31 - 2)) + 2
    for values in [(0, 101), (0, 7919), (5, 3, 202), (11, 505), (0, 404), (0, 2, 606)]:
        assert derived_seed(*values) == legacy(*values), values
    assert derived_seed(np.int64(3), 4) == derived_seed(3, 4)
    assert derived_seed(0, "ch2-identity") != derived_seed(0, "ch2-other") and derived_seed(1, "a") >= 2
    with pytest.raises(ParameterError):
        derived_seed(0, 1.5)
    a, b = derived_generator(0, "x"), derived_generator(0, "x")
    assert torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("EQUIVLIB_THREADS", raising=False)
        set_threads(1)
        assert torch.get_num_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("EQUIVLIB_THREADS", "2")
        set_threads(1)  # the environment wins
        assert torch.get_num_threads() == 2
        set_threads(1, env=False)  # unless told to ignore it (a training worker sized by its pool)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("EQUIVLIB_THREADS")
        with pytest.raises(ParameterError, match="positive integer"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_chapter_setup_cpu_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("EQUIVLIB_THREADS", raising=False)
    try:
        ns = {"PROFILE": "quick", "SEED": 3, "DEVICE": "cpu"}
        device, gen = chapter_setup(ns, [], cpu_threads=1)
        assert device == torch.device("cpu") and torch.get_num_threads() == 1
        assert gen.initial_seed() == 3
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)


def test_resolve_device_accepts_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ParameterError, match="DEVICE must be one of"):
        resolve_device("tpu")


def test_set_deterministic(monkeypatch):
    from equivlib.config import set_deterministic

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    try:
        monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        set_deterministic()
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a user's own choice is kept
        set_deterministic()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def test_smoke_mode_caps_steps_and_applies_the_named_overrides(monkeypatch):
    full = {"steps": 100, "relax_steps": 3, "reps": 1000, "lr": 0.1, "inner": {"toy_steps": 50, "grid": 201}}
    quick = {"steps": 10}
    monkeypatch.delenv("EQUIVLIB_SMOKE", raising=False)
    assert smoke_steps() is None and by_profile("full", quick=quick, full=full, smoke={"reps": 4}) == full
    assert capped(100) == 100 and not isinstance(capped(100), Capped)
    monkeypatch.setenv("EQUIVLIB_SMOKE", "5")
    out = by_profile("full", quick=quick, full=full, smoke={"reps": 4, "inner": {"grid": 9}})
    assert out == {"steps": 5, "relax_steps": 3, "reps": 4, "lr": 0.1, "inner": {"toy_steps": 5, "grid": 9}}
    assert out["steps"].planned == 100 and out["inner"]["toy_steps"].planned == 50 and out["relax_steps"].planned == 3
    assert full["steps"] == 100 and full["inner"]["grid"] == 201  # the table itself is not changed
    assert by_profile("quick", quick=quick, full=full, smoke={"reps": 4}) is quick
    # a capped count is an int everywhere, keeps its plan through pickling (process pools), and is capped once
    c = out["steps"]
    assert json.dumps(c) == "5" and c + 1 == 6 and range(c)[-1] == 4
    assert pickle.loads(pickle.dumps(c)).planned == 100 and capped(c) is c
    # an explicit smoke step count still stands for the full profile's (the smoke ledger estimates from it)
    over = by_profile("full", quick=quick, full=full, smoke={"steps": 12, "inner": {"toy_steps": 2}})
    assert over["steps"] == 12 and over["steps"].planned == 100 and over["inner"]["toy_steps"].planned == 50
    with pytest.raises(ParameterError, match=r"smoke overrides \['repz'\]"):
        by_profile("full", quick=quick, full=full, smoke={"repz": 4})
    monkeypatch.setenv("EQUIVLIB_SMOKE", "zero")
    with pytest.raises(ParameterError, match="EQUIVLIB_SMOKE must be a positive integer"):
        smoke_steps()


def test_smoke_mode_runs_the_full_profile_only(monkeypatch):
    monkeypatch.setenv("EQUIVLIB_SMOKE", "5")
    with pytest.raises(ParameterError, match="smoke mode runs the full profile"):
        chapter_setup({"PROFILE": "quick", "SEED": 0, "DEVICE": "cpu"}, [])
    chapter_setup({"PROFILE": "full", "SEED": 0, "DEVICE": "cpu"}, [])


def test_smoke_report_appends_json_lines(monkeypatch, tmp_path):
    monkeypatch.delenv("EQUIVLIB_SMOKE_LEDGER", raising=False)
    smoke_report({"a": 1})  # no ledger: nothing written, no error
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("EQUIVLIB_SMOKE_LEDGER", str(ledger))
    smoke_report({"a": 1})
    smoke_report({"b": 2.5})
    assert [json.loads(line) for line in ledger.read_text().splitlines()] == [{"a": 1}, {"b": 2.5}]
