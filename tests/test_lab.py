"""``make lab``: JupyterLab serves the jupytext chapters as notebooks (tools/lab.py).

Starts the server as ``make lab`` does, on a free local port, opens chapter 1 through
the contents API as a notebook, checks the Jupytext Notebook viewer is the default for
Python files, and shuts the server down.
"""
import importlib.util
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("lab", ROOT / "tools" / "lab.py")
lab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lab)
CHAPTER = "chapters/01_loss_decomposition.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, token, method="GET"):
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
        return json.loads(body) if body else None


def test_overrides_merge_into_existing_settings(tmp_path):
    path = tmp_path / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"}}))
    assert lab.settings_overrides(tmp_path) == path
    got = json.loads(path.read_text())
    assert got["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}  # kept
    assert got["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"] == "Jupytext Notebook"


def test_lab_serves_a_chapter_as_a_notebook_and_shuts_down(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    env_home = {"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "lab.py"), "--no-browser", f"--port={port}",
                             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--ip=127.0.0.1"],
                            cwd=ROOT, env={**__import__("os").environ, **env_home},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"{base}/api/status", token)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"jupyter lab did not start:\n{proc.stdout.read()[-3000:]}")
                time.sleep(0.5)
        model = get(f"{base}/api/contents/{CHAPTER}?type=notebook&content=1", token)
        assert model["type"] == "notebook" and model["format"] == "json"
        nb = model["content"]
        expected = jupytext.read(ROOT / CHAPTER)
        assert [c["cell_type"] for c in nb["cells"]] == [c.cell_type for c in expected.cells]
        assert any("parameters" in c["metadata"].get("tags", []) for c in nb["cells"])  # papermill's cell
        settings = get(f"{base}/lab/api/settings/@jupyterlab/docmanager-extension:plugin", token)
        viewers = settings["schema"]["properties"]["defaultViewers"]["default"]
        assert viewers.get("python") == "Jupytext Notebook"
        get(f"{base}/api/shutdown", token, method="POST")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
