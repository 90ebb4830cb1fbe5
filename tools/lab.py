"""Start JupyterLab on the repository with the chapters opening as notebooks (``make lab``).

``chapters/*.py`` are jupytext percent files, the single source of every chapter;
jupytext's contents manager (installed with the ``jupytext`` package) serves them
as notebooks, and edits made in the notebook view are written back to the ``.py``.
This script makes the *Jupytext Notebook* viewer the default for Python files in
this environment (a JupyterLab settings override in the virtual environment, so
nothing is written under your home folder) and starts the server:

    python tools/lab.py                         # opens a browser on chapters/
    python tools/lab.py --port 8899 --no-browser --token SECRET

Any further arguments go to ``jupyter lab`` unchanged.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: JupyterLab's settings override: Python files (and Markdown) open in the Jupytext Notebook viewer
OVERRIDES = {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}


def settings_overrides(prefix: Path = Path(sys.prefix)) -> Path:
    """Write (merge) the override into ``{prefix}/share/jupyter/lab/settings/overrides.json``; return its path."""
    path = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.is_file() else {}
    for plugin, values in OVERRIDES.items():
        current.setdefault(plugin, {}).update(values)
    path.write_text(json.dumps(current, indent=2) + "\n")
    return path


def command(args: list[str]) -> list[str]:
    """The ``jupyter lab`` command line: served from the repository root, opened at the chapters."""
    exe = Path(sys.executable).with_name("jupyter")
    # containers often run as root, which Jupyter refuses without the flag
    root = ["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    return [str(exe), "lab", f"--ServerApp.root_dir={ROOT}", "--ServerApp.default_url=/lab/tree/chapters", *root, *args]


def main(argv: list[str]) -> None:
    settings_overrides()
    cmd = command(argv)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
