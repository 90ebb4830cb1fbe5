"""Chapter 2's training plan: what each configuration changes, for both profiles."""
import pytest

from equivlib.config import ParameterError
from equivlib.plans import CHAPTER2, TASK_NAMES, chapter2_plan, chapter2_runs
from equivlib.runs import RunConfig, checkpoint_steps


def _diff(a: RunConfig, b: RunConfig) -> set[str]:
    da, db = a.to_dict(), b.to_dict()
    return {k for k in da if da[k] != db[k]}


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_main_runs_follow_the_table(profile):
    plan, sizes = chapter2_runs(profile, seed=3), CHAPTER2[profile]
    assert tuple(plan.main) == TASK_NAMES
    for name, cfg in plan.main.items():
        t = sizes[name]
        assert (cfg.task, cfg.model_size, cfg.steps, cfg.batch_size, cfg.lr, cfg.seed, cfg.profile) == (
            name, t["size"], t["steps"], t["batch"], t["lr"], 3, profile)
        mon = cfg.extra["monitor"]
        assert {k: mon[k] for k in t["monitor"]} == t["monitor"]
        assert mon["at"][0] == 0 and mon["at"][-1] == t["steps"] and len(mon["at"]) >= sizes["n_evals"] // 2


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_each_sweep_run_changes_one_setting(profile):
    plan = chapter2_runs(profile)
    ref = plan.main["forces"]
    field = {"training set": {"n_train"}, "batch size": {"batch_size"}, "model size": {"model_size"},
             "optimiser": {"optimizer", "lr"}}
    axes = set()
    for axis, label, cfg in plan.sweep:
        axes.add(axis)
        # the monitor is cheaper (extra) and the optimiser axis may keep adam: changed fields within the axis
        assert _diff(ref, cfg) - {"extra"} <= field[axis], (axis, label)
        assert _diff(ref, cfg) - {"extra"}, f"sweep variant {label!r} equals the reference"
        assert cfg.extra["monitor"]["n_elements"] == CHAPTER2[profile]["sweep"]["monitor"]["n_elements"]
    assert axes == set(field)
    assert len({cfg.key for _, _, cfg in plan.sweep}) == len(plan.sweep)


def test_gap_pairs_differ_in_architecture_only_and_replicate_the_training_seed():
    plan = chapter2_runs("quick", seed=5)
    assert len(plan.gap["escaip"]) == len(plan.gap["e3nn"]) == CHAPTER2["quick"]["gap"]["seeds"] >= 3
    for k, (es, e3) in enumerate(zip(plan.gap["escaip"], plan.gap["e3nn"])):
        assert _diff(es, e3) == {"arch", "extra"} and e3.arch == "e3nn"
        # and the e3nn model's monitor is exact: in mixed mode it would read float32 round-off
        assert e3.extra["monitor"] == {**es.extra["monitor"], "precision": "exact"}
        assert "precision" not in es.extra["monitor"]
        assert es.steps == CHAPTER2["quick"]["gap"]["steps"]
        # the same data and held-out set (seed); replicate k > 0 another initialisation and minibatch order
        assert es.seed == 5 and es.train_seed == (None if k == 0 else 5 + k)
        assert _diff(plan.main["forces"], es) <= {"steps", "eval_every", "extra", "train_seed"}
    assert len({c.key for c in plan.gap["escaip"]}) == CHAPTER2["quick"]["gap"]["seeds"]


def test_flow_and_voxel_sweeps_change_one_setting_of_their_main_run():
    plan = chapter2_runs("quick")
    assert set(plan.task_sweeps) == {"flow", "voxels"}
    for name, sweep in plan.task_sweeps.items():
        ref = plan.main[name]
        assert {axis for axis, _, _ in sweep} == {"training set", "model size"}
        for axis, label, cfg in sweep:
            assert _diff(ref, cfg) - {"extra"} == ({"n_train"} if axis == "training set" else {"model_size"}), label
            # the task's own monitor (flow: its times; voxels: its group scheme), fewer evaluations
            assert {k: v for k, v in cfg.monitor_kwargs().items() if k != "at"} == \
                {k: v for k, v in ref.monitor_kwargs().items() if k != "at"}
            assert len(cfg.eval_steps()) < len(ref.eval_steps())


def test_configs_lists_every_run_once():
    plan = chapter2_runs("quick")
    keys = [c.key for c in plan.configs()]
    n_task_sweeps = sum(len(sw) for sw in plan.task_sweeps.values())
    assert len(keys) == len(set(keys)) == 3 + len(plan.sweep) + n_task_sweeps + 2 * CHAPTER2["quick"]["gap"]["seeds"]


def test_plan_is_a_copy_and_bad_input_is_named():
    chapter2_plan("quick")["forces"]["steps"] = -1
    assert CHAPTER2["quick"]["forces"]["steps"] > 0
    with pytest.raises(ParameterError, match="(?i)profile"):
        chapter2_plan("huge")
    with pytest.raises(ParameterError, match="(?i)seed"):
        chapter2_runs("quick", seed=-1)


def test_main_runs_checkpoint_at_every_monitor_step_and_the_default_ones():
    from equivlib.runs import checkpoint_steps

    for name, cfg in chapter2_runs("quick").main.items():
        ck = cfg.checkpoints()
        assert set(cfg.extra["monitor"]["at"]) <= set(ck) and set(checkpoint_steps(cfg.steps)) <= set(ck)


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_chapter3_and_4_plans_name_existing_subsets(profile):
    from equivlib.hessian import select_parameters
    from equivlib.plans import chapter3_plan, chapter4_plan
    from equivlib.tasks import make_model

    p3, p4 = chapter3_plan(profile), chapter4_plan(profile)
    size = CHAPTER2[profile]
    for name in TASK_NAMES:
        model = make_model(name, size[name]["size"])
        n = sum(p.numel() for p in select_parameters(model, p3[name]["subset"]).values())
        assert 0 < n <= (500 if profile == "quick" else 10000), (name, n)
        assert p4[name]["subset"] == p3[name]["subset"]
    chapter3_plan(profile)["forces"]["subset"].append("x")
    assert "x" not in chapter3_plan(profile)["forces"]["subset"]


def test_early_and_spread_steps():
    from equivlib.plans import early_step, spread_steps

    steps = [0, 1, 3, 10, 31, 96, 300]
    assert early_step(steps) == 31 and early_step([0, 5]) == 5
    assert spread_steps(steps, 3) == [0, 10, 300] and spread_steps(steps, 10) == steps == spread_steps(steps, None)
    with pytest.raises(ParameterError, match="no checkpoints"):
        early_step([])


def test_smoke_mode_caps_the_full_plan_and_remembers_each_runs_size(monkeypatch):
    from equivlib.plans import SMOKE, chapter3_plan, chapter4_plan

    full = chapter2_runs("full")
    monkeypatch.setenv("EQUIVLIB_SMOKE", "7")
    smoke = chapter2_runs("full")
    pairs = list(zip(full.configs(), smoke.configs()))
    assert len(pairs) == len(full.configs()) == len(smoke.configs())
    main = {c.key for c in smoke.main.values()}
    for f, s in pairs:
        n = 7 if s.key in main else 1  # the sweep and the gap pair take one step
        assert s.steps == n and s.eval_steps() == [0, n] and s.checkpoints() == checkpoint_steps(n)
        assert s.extra["smoke"] == {"steps": f.steps, "evals": len(f.eval_steps())}
        # everything but the steps, their schedules, the smoke mark (and the training sets that fit the smoke's data)
        assert _diff(f, s) <= {"steps", "eval_every", "extra", "n_train"} and s.key != f.key
        assert s.n_train == f.n_train or s.n_train in SMOKE[2]["sweep"]["n_train"] + \
            SMOKE[2]["task_sweep"]["voxels"]["n_train"]
        assert {k: v for k, v in s.extra.items() if k not in ("monitor", "checkpoints", "smoke")} == \
            {k: v for k, v in f.extra.items() if k not in ("monitor", "checkpoints")}
        assert {k: v for k, v in s.monitor_kwargs().items() if k != "at"} == \
            {k: v for k, v in f.monitor_kwargs().items() if k != "at"}
    assert chapter2_plan("full")["voxsub"] == {**CHAPTER2["full"]["voxsub"], **SMOKE[2]["voxsub"]}
    assert chapter3_plan("full")["forces"]["n_batches"] == 2 and chapter4_plan("full")["n_directions"] == 2
    assert chapter2_runs("quick").main["forces"].steps == CHAPTER2["quick"]["forces"]["steps"]  # quick untouched
