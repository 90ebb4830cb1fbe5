"""Tests for equivlib.runs: run configurations, their keys, and cached training runs."""
import json
import logging

import pytest
import torch

import equivlib.runs as runs
from equivlib.config import ParameterError
from equivlib.runs import Run, RunConfig, checkpoint_steps, code_digest, get_run, source_hash
from equivlib.training import train


def test_bad_run_configs_raise():
    with pytest.raises(ParameterError, match="unknown task"):
        RunConfig("nope")
    with pytest.raises(ParameterError, match="PROFILE"):
        RunConfig("flow", profile="medium")
    with pytest.raises(ParameterError, match="model size"):
        RunConfig("flow", model_size="xl")
    with pytest.raises(ParameterError, match="steps"):
        RunConfig("flow", steps=-1)


def test_keys_are_stable_and_distinct():
    a = RunConfig("flow", seed=0)
    assert a.key == RunConfig("flow", seed=0).key
    assert a.key != RunConfig("flow", seed=1).key
    assert a.key != RunConfig("flow", augment=False).key
    assert a.key != RunConfig("flow", extra={"max_residues": 8}).key
    assert checkpoint_steps(100)[0] == 0 and checkpoint_steps(100)[-1] == 100
    assert checkpoint_steps(0) == [0]


RUN_EXTRA = {"max_residues": 12, "n_heldout": 2, "monitor": {"times": [0.5], "n_elements": 4}}


def test_run_is_cached_reloaded_and_repaired(tmp_path, monkeypatch, caplog):
    calls = []

    def counting_train(*a, **k):
        calls.append(1)
        return train(*a, **k)

    monkeypatch.setattr(runs, "train", counting_train)
    cfg = RunConfig("flow", steps=6, batch_size=4, eval_every=3, extra=RUN_EXTRA)
    first = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert isinstance(first, Run) and first.trained and len(calls) == 1
    assert list(first.monitor.step) == [0, 3, 6] and set(first.monitor.t) == {0.5}
    assert first.checkpoint_steps == checkpoint_steps(6) and len(first.log) == 6
    second = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert not second.trained and len(calls) == 1  # loaded, not retrained
    assert second.monitor.equals(first.monitor) and second.log.equals(first.log)
    for s in first.checkpoint_steps:
        a, b = first.load_model(s).state_dict(), second.load_model(s).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    m0, m6 = first.load_model(0).state_dict(), first.load_model(6).state_dict()
    assert any(not torch.equal(m0[k], m6[k]) for k in m0)
    assert first.n_parameters == sum(p.numel() for p in first.load_model().parameters()) > 0
    with pytest.raises(ParameterError, match="no checkpoint"):
        first.load_model(5)
    # same config, fresh cache: the same numbers (seeded)
    again = get_run(cfg, cache_dir=tmp_path / "other", progress=False)
    numbers = lambda run: run.monitor.drop(columns="train_seconds")  # noqa: E731 - wall-clock differs
    assert numbers(again).equals(numbers(first))
    # the training clock: increasing per step, and the monitor rows carry it (0 before training)
    assert (first.log["seconds"].diff().dropna() > 0).all() and first.train_seconds == first.log["seconds"].iloc[-1]
    assert first.monitor.loc[first.monitor.step == 0, "train_seconds"].eq(0).all()
    assert first.monitor.set_index("step")["train_seconds"].loc[6] == first.log["seconds"].iloc[-1]
    # corrupt a checkpoint: detected, logged, retrained
    (first.path / "checkpoints" / f"step_{first.checkpoint_steps[1]}.pt").write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="equivlib.runs"):
        fixed = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert fixed.trained and len(calls) == 3 and "retraining" in caplog.text
    assert numbers(fixed).equals(numbers(first))
    # a missing file as well
    (fixed.path / "monitor.csv").unlink()
    assert get_run(cfg, cache_dir=tmp_path, progress=False).trained and len(calls) == 4
    # a different seed is a different entry
    assert RunConfig("flow", steps=6, batch_size=4, eval_every=3, extra=RUN_EXTRA, seed=1).key != cfg.key
    stored = json.loads((first.path / "config.json").read_text())
    assert stored["config"]["steps"] == 6 and stored["key"] == cfg.key


def test_run_with_e3nn_baseline_and_training_subset(tmp_path):
    cfg = RunConfig("forces", steps=2, batch_size=2, eval_every=1, arch="e3nn", n_train=4,
                    extra={"n_heldout": 2, "monitor": {"n_elements": 2, "precision": "exact"}})
    run = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert type(run.load_model()).__name__ == "E3ForceField"
    assert json.loads((run.path / "config.json").read_text())["n_examples"] == 4
    assert (run.monitor["percent"] < 1e-20).all()  # exactly equivariant: only float64 rounding is left
    assert cfg.key != RunConfig("forces", steps=2, batch_size=2, eval_every=1, n_train=4,
                                extra={"n_heldout": 2, "monitor": {"n_elements": 2}}).key
    with pytest.raises(ParameterError, match="architecture"):
        RunConfig("flow", arch="e3nn")
    with pytest.raises(ParameterError, match="n_train"):
        RunConfig("forces", n_train=0)
    with pytest.raises(ParameterError, match="exceeds"):
        get_run(RunConfig("forces", steps=1, n_train=10**6, extra={"n_heldout": 2}), cache_dir=tmp_path,
                progress=False)


def test_train_seed_repeats_a_run_on_the_same_data_with_another_initialisation(tmp_path):
    base = RunConfig("flow", steps=2, batch_size=4, eval_every=2, extra=RUN_EXTRA)
    a, b, b2 = (get_run(base.replace(train_seed=ts), cache_dir=tmp_path, progress=False) for ts in (None, 1, 1))
    assert b.config.key == b2.config.key and not b2.trained  # the same configuration: one run
    assert a.config.key != b.config.key
    wa, wb = a.load_model(0).state_dict(), b.load_model(0).state_dict()
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)  # another initialisation
    assert torch.equal(base.make_task().heldout.x, base.replace(train_seed=1).make_task().heldout.x)  # same data
    assert torch.equal(a.load_model(0).state_dict()[next(iter(wa))],
                       get_run(base.replace(train_seed=0), cache_dir=tmp_path, progress=False).load_model(0)
                       .state_dict()[next(iter(wa))])  # train_seed=seed is the default training
    for bad in (-1, 1.5, True):
        with pytest.raises(ParameterError, match="train_seed"):
            base.replace(train_seed=bad)


def test_runconfig_replace_merges_monitor():
    from equivlib.runs import RunConfig

    c = RunConfig("forces", steps=10, extra={"monitor": {"n_elements": 8, "at": [1, 2]}, "method": "mmff"})
    d = c.replace(batch_size=1, monitor={"n_elements": 4})
    assert d.batch_size == 1 and d.steps == 10 and d.extra["method"] == "mmff"
    assert d.extra["monitor"] == {"n_elements": 4, "at": [1, 2]}
    assert c.extra["monitor"]["n_elements"] == 8  # the original is untouched
    assert c.replace(arch="e3nn").extra == c.extra and c.replace(arch="e3nn").key != c.key
    with pytest.raises(ParameterError):
        c.replace(batch_size=0)


# --------------------------------------------------------------------------- fan-out


@pytest.fixture(scope="module")
def pool():
    """Two spawned workers, shared by the fan-out tests (starting one costs seconds)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


def test_train_runs_through_a_process_pool_matches_training_here(tmp_path, pool):
    cfgs = [RunConfig("forces", steps=4, eval_every=2), RunConfig("forces", steps=4, eval_every=2, seed=1)]
    threads = torch.get_num_threads()
    fanned = runs.train_runs(cfgs + cfgs[:1], executor=pool, cache_dir=tmp_path / "pool", progress=False,
                             threads_per_worker=threads)
    assert [r.config.key for r in fanned] == [c.key for c in cfgs + cfgs[:1]]  # order kept, duplicates loaded
    assert not any(r.trained for r in fanned)  # trained by the workers, loaded here
    here = runs.train_runs(cfgs, cache_dir=tmp_path / "here", progress=False)
    assert all(r.trained for r in here)
    for a, b in zip(fanned, here):  # same seed, same numbers, wherever it was trained
        assert a.log["loss"].tolist() == b.log["loss"].tolist()
        assert a.monitor["percent"].tolist() == b.monitor["percent"].tolist()
    assert not list((tmp_path / "pool").glob(".*tmp-*"))


def test_two_workers_on_one_configuration_train_it_once(tmp_path, pool):
    cfg = RunConfig("forces", steps=6, eval_every=3)
    futs = [pool.submit(runs._train_in_worker, cfg.to_dict(), str(tmp_path), "cpu", 1) for _ in range(2)]
    results = [f.result() for f in futs]
    assert [k for k, _ in results] == [cfg.key, cfg.key]
    assert sorted(t for _, t in results) == [False, True]  # the second waited on the lock, then loaded
    assert get_run(cfg, cache_dir=tmp_path, progress=False).trained is False


def test_a_killed_worker_leaves_nothing_trusted_and_releases_its_lock(tmp_path):
    import multiprocessing
    import time

    cfg = RunConfig("forces", steps=40, eval_every=40)
    proc = multiprocessing.get_context("spawn").Process(target=runs._train_in_worker,
                                                        args=(cfg.to_dict(), str(tmp_path), "cpu", 1))
    proc.start()
    deadline = time.time() + 120
    while not list(tmp_path.glob(f".{cfg.key}.tmp-*")) and time.time() < deadline:  # training has begun
        time.sleep(0.05)
    proc.kill()
    proc.join()
    assert list(tmp_path.glob(f".{cfg.key}.tmp-*")), "the worker was killed before it started training"
    assert not (tmp_path / cfg.key).exists() and not runs._complete(cfg, tmp_path / cfg.key)  # nothing to trust
    # the kernel released the dead worker's lock: the next call neither blocks nor trusts the leftovers
    run = get_run(cfg, cache_dir=tmp_path, progress=False)
    assert run.trained and len(run.log) == cfg.steps
    assert not list(tmp_path.glob(f".{cfg.key}.tmp-*"))  # the dead worker's temporary folder is cleared


def _two_configs():
    return [RunConfig("forces", steps=4, eval_every=2), RunConfig("forces", steps=4, eval_every=2, seed=1)]


def _same_numbers_as_here(fanned, tmp_path):
    """Runs trained elsewhere (loaded here) carry the numbers of the same configurations trained here."""
    assert not any(r.trained for r in fanned)
    here = runs.train_runs([r.config for r in fanned], cache_dir=tmp_path / "here", progress=False)
    for a, b in zip(fanned, here):
        assert a.log["loss"].tolist() == b.log["loss"].tolist()
        assert a.monitor["percent"].tolist() == b.monitor["percent"].tolist()


def test_train_runs_through_submitit_jobs(tmp_path):
    """submitit's jobs are not futures: train_runs polls them (LocalExecutor: the SLURM code path, run locally)."""
    import submitit

    ex = submitit.LocalExecutor(folder=tmp_path / "jobs")
    ex.update_parameters(timeout_min=10)
    cfgs = _two_configs()
    fanned = runs.train_runs(cfgs, executor=ex, cache_dir=tmp_path / "runs", progress=False, poll=0.2,
                             threads_per_worker=torch.get_num_threads())
    assert [r.config.key for r in fanned] == [c.key for c in cfgs]
    _same_numbers_as_here(fanned, tmp_path)
    bad = RunConfig("forces", steps=2, eval_every=2, n_train=10**6)  # more examples than the data has
    with pytest.raises(RuntimeError, match=rf"(?s)1 of 1 runs failed:\n  {bad.key}: .*n_train=1000000 exceeds"):
        runs.train_runs([bad], executor=ex, cache_dir=tmp_path / "runs", progress=False, poll=0.2)
    with pytest.raises(ParameterError, match="poll"):
        runs.train_runs([cfgs[0].replace(seed=2)], executor=ex, cache_dir=tmp_path / "runs", progress=False, poll=0)


def test_train_runs_through_a_dask_cluster(tmp_path):
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        fanned = runs.train_runs(_two_configs(), executor=client.get_executor(), cache_dir=tmp_path / "runs",
                                 progress=False, threads_per_worker=torch.get_num_threads())
    _same_numbers_as_here(fanned, tmp_path)


def test_an_executor_returning_no_jobs_is_refused(tmp_path):
    class _Odd:
        def submit(self, fn, *args):
            return 42

    with pytest.raises(ParameterError, match="submit returned a int"):
        runs.train_runs(_two_configs()[:1], executor=_Odd(), cache_dir=tmp_path, progress=False)


def test_default_executor_and_bad_input(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUIVLIB_WORKERS", "1")
    assert runs.default_executor() is None
    (run,) = runs.train_runs([RunConfig("forces", steps=2, eval_every=2)], executor="auto", cache_dir=tmp_path,
                             progress=False)  # one worker: trained here
    assert run.trained
    monkeypatch.setenv("EQUIVLIB_WORKERS", "two")
    with pytest.raises(ParameterError, match="EQUIVLIB_WORKERS"):
        runs.default_executor()
    monkeypatch.delenv("EQUIVLIB_WORKERS")
    ex = runs.default_executor(max_workers=2)
    assert ex is not None and ex._max_workers == 2
    ex.shutdown()
    with pytest.raises(ParameterError, match="RunConfig"):
        runs.train_runs(["forces"])
    with pytest.raises(ParameterError, match="'auto'"):
        runs.train_runs([], executor="pool")


def test_train_runs_submits_the_longest_runs_first(tmp_path, monkeypatch):
    from concurrent.futures import Future

    from equivlib import runs as runs_mod

    order = []

    class _Recorder:
        _max_workers = 2

        def submit(self, fn, config, *args):
            order.append((config["steps"], config["model_size"]))
            fut = Future()
            fut.set_result((config, True))
            return fut

    monkeypatch.setattr(runs_mod, "get_run", lambda c, **kw: c)
    cfgs = [RunConfig("forces", steps=5), RunConfig("forces", steps=50), RunConfig("forces", model_size="medium", steps=20)]
    runs_mod.train_runs(cfgs, executor=_Recorder(), cache_dir=tmp_path, progress=False)
    assert order == [(20, "medium"), (50, "small"), (5, "small")]
    # the runs another process waits for go first, whatever their cost
    order.clear()
    runs_mod.train_runs(cfgs, executor=_Recorder(), cache_dir=tmp_path, progress=False, first=cfgs[:1])
    assert order == [(5, "small"), (20, "medium"), (50, "small")]
    with pytest.raises(ParameterError, match="not in configs"):
        runs_mod.train_runs(cfgs[1:], executor=_Recorder(), cache_dir=tmp_path, progress=False, first=cfgs[:1])


def test_config_rebuilds_its_task_and_monitor_keywords():
    cfg = RunConfig("forces", steps=7, extra={"n_heldout": 3, "monitor": {"n_elements": 2, "at": [2]},
                                              "checkpoints": [0, 7]})
    task = cfg.make_task()
    assert task.heldout.x.shape[0] == 3  # the task keyword reached the task; monitor and checkpoints did not
    assert cfg.monitor_kwargs() == {"n_elements": 2, "at": [2, 7]}  # the last step is always evaluated
    assert RunConfig("forces", steps=5).monitor_kwargs() == {"at": [5]}


def test_source_hash_ignores_docstrings_and_comments_but_not_code(tmp_path):
    code = '"""Module doc."""\nimport math\n\n\ndef f(x):\n    """Doc."""\n    return math.sqrt(x)  # a comment\n\n\nclass A:\n    """Doc."""\n'
    (tmp_path / "m.py").write_text(code)
    base = source_hash(tmp_path)
    edits = {
        "docstrings and comments": code.replace("Module doc.", "Other words.").replace('"""Doc."""', '"""New."""')
                                       .replace("# a comment", "# another"),
        "layout": code.replace("return math.sqrt(x)", "return math.sqrt(\n        x)"),
    }
    for i, (what, text) in enumerate(edits.items()):
        d = tmp_path / f"same{i}"
        d.mkdir()
        (d / "m.py").write_text(text)
        assert source_hash(d) == base, what
    for i, text in enumerate([code.replace("math.sqrt(x)", "math.sqrt(x + 1)"), code.replace("class A", "class B"),
                              code.replace("import math", "import math\nY = 2")]):
        d = tmp_path / f"diff{i}"
        d.mkdir()
        (d / "m.py").write_text(text)
        assert source_hash(d) != base, text
    assert code_digest(code) != code_digest(code + "x = 1\n")
    assert len(source_hash()) == 64  # equivlib's own tree


def test_runs_dir_and_a_smoke_run_report_their_planned_size(tmp_path, monkeypatch):
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv("EQUIVLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("EQUIVLIB_SMOKE", "3")
    monkeypatch.setenv("EQUIVLIB_SMOKE_LEDGER", str(ledger))
    assert runs.runs_dir() == tmp_path / "runs"
    cfg = RunConfig("forces", steps=3, eval_every=2, extra={"smoke": {"steps": 300, "evals": 7}})
    run = get_run(cfg, progress=False)
    assert run.path.parent == tmp_path / "runs" and run.trained
    (entry,) = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert entry["steps"] == 3 and entry["planned_steps"] == 300 and entry["planned_evals"] == 7
    assert entry["evals"] == len(cfg.eval_steps()) == 3  # steps 0, 2 and the last
