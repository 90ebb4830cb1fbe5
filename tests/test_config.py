"""Tests for equivlib.config: parameters, profiles, seeds (derived seeds pinned: they choose the data), devices."""
import os
import numpy as np
import pytest
import torch

from equivlib.config import (ParameterError, by_profile, chapter_setup, check_parameters, derived_generator,
                             derived_seed, resolve_device, seed_everything, set_threads)


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
