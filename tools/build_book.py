#!/usr/bin/env python
"""Execute the chapters with papermill and render the book with Jupyter Book.

    python tools/build_book.py                      # every chapter, quick profile, then render
    python tools/build_book.py --chapters 01        # one chapter (cached ones are not re-run)
    python tools/build_book.py --profile full --device cuda
    python tools/build_book.py --chapters 01 -p N_ROT_MAX=32   # extra chapter parameters (YAML values)

``chapters/NN_name.py`` (jupytext py:percent) is the only source.  Each is turned
into a notebook, checked for unknown parameters, executed by papermill into
``book/generated/NN_name.ipynb`` and checked for error outputs; a failing cell
stops the build with the chapter and cell named.  Execution is cached: a chapter
is re-executed only when its source, its parameters, or the library / data
samples it runs on change.  Chapters run side by side (``--jobs``, default: two on a
machine with two or more cores), each kernel with cores / jobs torch threads; a
chapter whose training runs others read starts first (``FIRST``), and a page may be held back until
another has finished (``AFTER``).
Rendering runs Jupyter Book with execution off,
warnings as errors, nitpicky, and a full rebuild.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import jupytext
import nbformat
import papermill as pm
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
GENERATED = ROOT / "book" / "generated"
CACHE = ROOT / "_build" / "exec-cache"
SOURCES = ROOT / "_build" / "sources"
HASHED_TREES = ["equivlib", "data/samples"]
#: the landing page (the toc's root): the chapters' questions, computed answers, figures and claims, read
#: from the executed chapters, so it is executed after them and whenever any of them changed
LANDING = CHAPTERS / "findings.py"
#: how-to pages (``chapters/guide_*.py``): executed like chapters, after them, and not read by the landing page
GUIDES = "guide_*.py"
#: chapter -> a chapter it must wait for (none at present).  Chapters 3-5 read chapter 2's three main runs
#: but do not wait for chapter 2 to finish: chapter 2 trains those runs before its other runs
#: (``train_runs(first=...)``), each under a lock on its cache entry, so a chapter that asks for one
#: loads it, waits on its lock while it is being trained, or trains it itself if nobody has started it
AFTER: dict[str, str] = {}
#: pages started before the others (in this order): those whose training runs other pages read
FIRST = ("02_learning_dynamics",)


class BuildError(RuntimeError):
    pass


def chapter_files(selected: list[str] | None) -> list[Path]:
    files = sorted(CHAPTERS.glob("[0-9][0-9]_*.py"))
    if not files:
        raise BuildError(f"no chapters found in {CHAPTERS}")
    if not selected:
        return files
    out = []
    for s in selected:
        match = [f for f in files if f.name.startswith(f"{int(s):02d}_") or f.stem == s]
        if not match:
            raise BuildError(f"no chapter {s!r}; known: {[f.stem for f in files]}")
        out += match
    return out


def tree_hash() -> str:
    h = hashlib.sha256()
    for sub in HASHED_TREES:
        for p in sorted((ROOT / sub).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(ROOT)).encode())
                h.update(p.read_bytes())
    return h.hexdigest()


def chapters_hash(chapters: list[Path]) -> str:
    """Hash of the executed notebooks of ``chapters`` (what the landing page reads); raises if one is missing."""
    h = hashlib.sha256()
    for path in chapters:
        nb = GENERATED / f"{path.stem}.ipynb"
        if not nb.is_file():
            raise BuildError(f"the landing page reads every chapter: {path.stem} has not been executed "
                             f"(run the whole book, or that chapter)")
        h.update(nb.read_bytes())
    return h.hexdigest()


def error_cells(nb) -> list[str]:
    """Describe every error output: cell number, its first source line, the error and the traceback's end."""
    import re

    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                tb = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.get("traceback", [])[-4:]))
                found.append(f"cell {i} (execution count {cell.get('execution_count')}, starting {first!r}): "
                             f"{out.get('ename')}: {out.get('evalue')}\n{tb}")
    return found


def execute(path: Path, params: dict, lib_hash: str, force: bool) -> bool:
    """Execute one chapter; return True if it ran, False if the cache was valid."""
    src = path.read_bytes()
    key = hashlib.sha256(src + json.dumps(params, sort_keys=True).encode() + lib_hash.encode()).hexdigest()
    out_nb = GENERATED / f"{path.stem}.ipynb"
    stamp = CACHE / f"{path.stem}.json"
    if not force and out_nb.exists() and stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        if not error_cells(nbformat.read(out_nb, as_version=4)):
            print(f"[{path.stem}] up to date (source, parameters and library unchanged)")
            return False
    nb = jupytext.read(path)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    SOURCES.mkdir(parents=True, exist_ok=True)
    src_nb = SOURCES / f"{path.stem}.ipynb"
    nbformat.write(nb, src_nb)
    declared = pm.inspect_notebook(str(src_nb))
    if not declared:
        raise BuildError(f"[{path.stem}] has no cell tagged 'parameters'")
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise BuildError(f"[{path.stem}] unknown parameter(s) {unknown}; it accepts {sorted(declared)}")
    GENERATED.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    print(f"[{path.stem}] executing with {params}", flush=True)
    t0 = time.time()
    try:
        pm.execute_notebook(str(src_nb), str(out_nb), parameters=params, kernel_name="python3",
                            cwd=str(ROOT), progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as e:
        detail = error_cells(nbformat.read(out_nb, as_version=4)) if out_nb.exists() else []
        raise BuildError(f"[{path.stem}] execution count {e.exec_count} failed: {e.ename}: {e.evalue}\n"
                         + "\n".join(detail) + f"\n(partial notebook: {out_nb})") from None
    errs = error_cells(nbformat.read(out_nb, as_version=4))
    if errs:
        raise BuildError(f"[{path.stem}] error outputs in the executed notebook:\n  " + "\n  ".join(errs))
    dt = time.time() - t0
    CACHE.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "params": params, "seconds": round(dt, 1)}))
    print(f"[{path.stem}] executed in {dt:.1f} s", flush=True)
    return True


def default_jobs() -> int:
    """Chapters executed at once: ``BOOK_JOBS`` if set, else 2 on a machine with two or more cores.

    Two kernels overlap what one leaves idle (imports, kernel start-up, single-threaded
    Python, a training pool's tail); more than two mostly contend.
    """
    env = os.environ.get("BOOK_JOBS")
    if env is not None:
        if not env.isdigit() or int(env) < 1:
            raise BuildError(f"BOOK_JOBS must be a positive integer, got {env!r}")
        return int(env)
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def kernel_environment(jobs: int | None) -> int:
    """Set what every chapter kernel inherits (inline figures; cores / jobs torch threads); return the jobs."""
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    jobs = default_jobs() if jobs is None else jobs
    if jobs > 1 and not os.environ.get("EQUIVLIB_THREADS"):  # kernels side by side share the cores
        os.environ["EQUIVLIB_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return jobs


def execute_all(pages: list[tuple[Path, dict, str]], force: bool, jobs: int) -> None:
    """Execute ``(path, params, lib_hash)`` pages, up to ``jobs`` at once, each after its ``AFTER`` prerequisite.

    Prerequisites and ``FIRST`` pages start first (they hold up the most), the rest in the given order.
    The first failure stops new starts; the ones running finish, then it is raised.
    """
    if jobs < 1:
        raise BuildError(f"--jobs must be >= 1, got {jobs}")
    stems = {p.stem for p, _, _ in pages}
    needed = {AFTER[s] for s in stems if s in AFTER and AFTER[s] in stems} | (set(FIRST) & stems)
    pending = sorted(pages, key=lambda page: page[0].stem not in needed)  # stable: otherwise the given order
    done: set[str] = set()
    running: dict = {}
    failure = None
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while (pending and failure is None) or running:
            while failure is None and len(running) < jobs:
                ready = next((pg for pg in pending if AFTER.get(pg[0].stem) not in stems - done), None)
                if ready is None:
                    break
                pending.remove(ready)
                running[pool.submit(execute, ready[0], ready[1], ready[2], force)] = ready[0].stem
            if not running:
                raise BuildError(f"AFTER has a cycle among {[pg[0].stem for pg in pending]}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                stem = running.pop(fut)
                if fut.exception() is not None:
                    failure = failure or fut.exception()
                else:
                    done.add(stem)
    if failure is not None:
        raise failure


def toc_notebooks() -> list[Path]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = []

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))
            for part in e.get("parts", []):
                walk(part.get("chapters"))

    files.append(toc["root"])
    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return [ROOT / f"{f}.ipynb" for f in files if f.startswith("book/generated/")]


def render(full: bool) -> None:
    missing = [p.relative_to(ROOT) for p in toc_notebooks() if not p.exists()]
    if missing:
        raise BuildError(f"cannot render: not executed yet: {[str(m) for m in missing]} (run `make book`)")
    cmd = [str(Path(sys.executable).parent / "jupyter-book"), "build", str(ROOT), "-W", "-n", "--keep-going"]
    if full:
        cmd.append("--all")
    print("rendering:", " ".join(cmd[1:]), flush=True)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    (ROOT / "_build").mkdir(exist_ok=True)
    (ROOT / "_build" / "render.log").write_text(log)
    bad = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line or "Traceback" in line]
    if proc.returncode != 0 or bad:
        print(log[-6000:])
        raise BuildError(f"rendering failed (exit {proc.returncode}, {len(bad)} warning/error lines; "
                         f"full log: _build/render.log)")
    unrendered = unrendered_glue(ROOT / "_build" / "html")
    if unrendered:
        raise BuildError("glued values shown as a Python repr (a Markdown or HTML value glued with {glue:text}: "
                         "use {glue:md}): " + "; ".join(f"{page}: {n}" for page, n in unrendered.items()))
    print(f"rendered in {time.time() - t0:.1f} s: {ROOT / '_build' / 'html' / 'index.html'}")


def unrendered_glue(html_dir: Path) -> dict[str, int]:
    """``{page: count}`` of glued values that reached the HTML as ``<IPython.core.display.X object>``."""
    out = {}
    for page in sorted(html_dir.rglob("*.html")):
        n = page.read_text(encoding="utf-8", errors="replace").count("&lt;IPython.core.display.")
        if n:
            out[str(page.relative_to(html_dir))] = n
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick", choices=["quick", "full"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--chapters", nargs="*", help="chapter numbers or stems (default: all)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="extra chapter parameter; VALUE is parsed as YAML")
    ap.add_argument("--force", action="store_true", help="re-execute even if cached")
    ap.add_argument("--no-render", action="store_true")
    ap.add_argument("--incremental", action="store_true", help="incremental render (default: full rebuild)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="chapters executed at once (default: BOOK_JOBS, else 2 on two or more cores)")
    args = ap.parse_args(argv)
    params = {"PROFILE": args.profile, "SEED": args.seed, "DEVICE": args.device}
    for kv in args.param:
        if "=" not in kv:
            raise BuildError(f"--param expects KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        params[k] = yaml.safe_load(v)
    jobs = kernel_environment(args.jobs)
    t0 = time.time()
    lib_hash = tree_hash()
    common = {k: params[k] for k in ("PROFILE", "SEED", "DEVICE")}  # chapter-specific -p values are not theirs
    pages = [(path, params, lib_hash) for path in chapter_files(args.chapters)]
    pages += [(path, common, lib_hash) for path in sorted(CHAPTERS.glob(GUIDES))]
    execute_all(pages, args.force, jobs)
    execute(LANDING, common, lib_hash + chapters_hash(chapter_files(None)), args.force)
    if not args.no_render:
        render(full=not args.incremental)
    print(f"total {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as e:
        print(f"BUILD FAILED: {e}", file=sys.stderr)
        sys.exit(1)
