"""The book pipeline fails loudly: error outputs, unknown parameters, missing parameters cell."""
import importlib.util
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
bb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bb)

HEADER = textwrap.dedent('''\
    # ---
    # jupyter:
    #   jupytext:
    #     text_representation:
    #       extension: .py
    #       format_name: percent
    # ---
    ''')


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    for name, sub in [("ROOT", ""), ("CHAPTERS", "chapters"), ("GENERATED", "book/generated"),
                      ("CACHE", "_build/exec-cache"), ("SOURCES", "_build/sources")]:
        monkeypatch.setattr(bb, name, tmp_path / sub)
    (tmp_path / "chapters").mkdir()
    return tmp_path


def write(sandbox, name, body):
    p = sandbox / "chapters" / name
    p.write_text(HEADER + textwrap.dedent(body))
    return p


PARAMS = {"PROFILE": "quick", "SEED": 0, "DEVICE": "cpu"}


def test_error_cells_names_cell_and_error():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x = 1\n1 / 0")
    cell.outputs = [nbformat.v4.new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                           traceback=["\x1b[31mZeroDivisionError\x1b[0m"])]
    nb.cells = [nbformat.v4.new_code_cell("ok = 1"), cell]
    (msg,) = bb.error_cells(nb)
    assert "cell 1" in msg and "ZeroDivisionError" in msg and "x = 1" in msg and "\x1b" not in msg


def test_unknown_parameter_is_rejected_before_execution(sandbox):
    p = write(sandbox, "01_x.py", '''
        # %% tags=["parameters"]
        PROFILE = "quick"
        SEED = 0
        DEVICE = "auto"
        ''')
    with pytest.raises(bb.BuildError, match=r"unknown parameter\(s\) \['N_BOGUS'\]"):
        bb.execute(p, {**PARAMS, "N_BOGUS": 3}, "h", force=True)


def test_missing_parameters_cell_is_rejected(sandbox):
    p = write(sandbox, "01_x.py", '''
        # %%
        PROFILE = "quick"
        ''')
    with pytest.raises(bb.BuildError, match="no cell tagged 'parameters'"):
        bb.execute(p, PARAMS, "h", force=True)


def test_failing_cell_fails_the_build_and_cache_skips_good_chapters(sandbox):
    good = write(sandbox, "01_good.py", '''
        # %% tags=["parameters"]
        PROFILE = "quick"
        SEED = 0
        DEVICE = "auto"

        # %%
        answer = 6 * 7
        ''')
    bad = write(sandbox, "02_bad.py", '''
        # %% tags=["parameters"]
        PROFILE = "quick"
        SEED = 0
        DEVICE = "auto"

        # %%
        raise RuntimeError("the chapter is broken")
        ''')
    assert bb.execute(good, PARAMS, "h", force=False) is True
    assert bb.execute(good, PARAMS, "h", force=False) is False          # cached: same source, params, library
    assert bb.execute(good, {**PARAMS, "SEED": 1}, "h", force=False) is True  # new parameters re-execute
    assert bb.execute(good, {**PARAMS, "SEED": 1}, "h2", force=False) is True  # library change re-executes
    with pytest.raises(bb.BuildError, match=r"02_bad.*RuntimeError: the chapter is broken"):
        bb.execute(bad, PARAMS, "h", force=False)
    assert not (sandbox / "_build/exec-cache/02_bad.json").exists()


def test_api_reference_covers_every_public_module():
    """book/api.md documents each top-level module, and each subpackage through its re-exports."""
    import re
    api = (ROOT / "book" / "api.md").read_text()
    documented = re.findall(r"^\.\. automodule:: (\S+)", api, flags=re.M)
    assert len(documented) == len(set(documented))
    lib = ROOT / "equivlib"
    expected = {f"equivlib.{p.stem}" for p in lib.glob("*.py") if not p.stem.startswith("_")}
    expected |= {f"equivlib.{p.name}" for p in lib.iterdir() if (p / "__init__.py").is_file()}
    assert set(documented) == expected
    for pkg in (p.name for p in lib.iterdir() if (p / "__init__.py").is_file()):
        block = api.split(f".. automodule:: equivlib.{pkg}\n", 1)[1].split("```", 1)[0]
        assert ":imported-members:" in block, pkg  # a package's names are defined in its submodules
    assert "book/api" in (ROOT / "_toc.yml").read_text()


#: subpackages documented in book/api.md through the names they re-export (automodule :imported-members:)
REEXPORTING = ("equivlib.groups", "equivlib.hidden", "equivlib.md", "equivlib.models", "equivlib.data")


def _api_name(obj) -> str:
    mod = obj.__module__
    pkg = next((p for p in REEXPORTING if mod == p or mod.startswith(p + ".")), None)
    return f"{pkg}.{obj.__name__}" if pkg else f"{mod}.{obj.__qualname__}"


def library_calls(path: Path) -> set[str]:
    """API names of the equivlib functions and classes that a page's code cells call."""
    import ast
    import importlib
    import inspect

    import jupytext

    code = "\n".join(c.source for c in jupytext.read(path).cells if c.cell_type == "code")
    tree = ast.parse(code)
    modules, names = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update({a.asname or a.name: a.name for a in node.names if a.name.startswith("equivlib")})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("equivlib"):
            parent = importlib.import_module(node.module)
            for a in node.names:
                try:  # a submodule (from equivlib import kl) is not an attribute before its import
                    obj = importlib.import_module(f"{node.module}.{a.name}")
                except ModuleNotFoundError:
                    obj = getattr(parent, a.name)
                if inspect.ismodule(obj):
                    modules[a.asname or a.name] = obj.__name__
                else:
                    names[a.asname or a.name] = obj
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in names:
                called.add(names[f.id])
            elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in modules:
                called.add(getattr(importlib.import_module(modules[f.value.id]), f.attr))
    return {_api_name(o) for o in called if inspect.isclass(o) or inspect.isfunction(o)}


@pytest.mark.parametrize("page", [p.name for p in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))]
                         + [p.name for p in sorted((ROOT / "chapters").glob("guide_*.py"))])
def test_every_library_call_of_a_page_links_to_the_api_reference(page):
    import re

    path = ROOT / "chapters" / page
    linked = set(re.findall(r"\{py:(?:func|class)\}`~?([\w.]+)`", path.read_text()))
    missing = sorted(library_calls(path) - linked)
    assert not missing, f"{page} calls these without linking them (add to 'Library calls on this page'): {missing}"
    assert f"{{download}}`{page} <../../chapters/{page}>`" in path.read_text(), "no download link to the .py source"


def test_landing_page_has_a_section_for_every_chapter():
    landing = (ROOT / "chapters" / "findings.py").read_text()
    chapters = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.py"))
    assert chapters and bb.LANDING.name == "findings.py"
    for ch in chapters:
        prefix = f"ch{int(ch.name[:2])}"
        assert f'glue_headline("{prefix}"' in ch.read_text(), ch.name
        for key in (f"findings-{prefix}-question", f"findings-{prefix}-answer", f"findings-{prefix}-figure",
                    f"{{doc}}`{ch.stem}`"):
            assert key in landing, (ch.name, key)
    assert "root: book/generated/findings" in (ROOT / "_toc.yml").read_text()


def test_pages_run_side_by_side_and_after_their_prerequisite(sandbox, monkeypatch):
    log = sandbox / "log.txt"
    body = '''
        # %% tags=["parameters"]
        PROFILE = "quick"
        SEED = 0
        DEVICE = "auto"

        # %%
        import time
        with open({log!r}, "a") as f:
            f.write(f"start {name} {{time.time()}}\\n")
        time.sleep({sleep})
        with open({log!r}, "a") as f:
            f.write(f"end {name} {{time.time()}}\\n")
        '''
    pages = [(write(sandbox, f"{n}.py", body.format(log=str(log), name=n, sleep=s)), PARAMS, "h")
             for n, s in [("01_a", 3), ("02_b", 3), ("03_c", 0)]]
    monkeypatch.setattr(bb, "AFTER", {"03_c": "02_b"})
    bb.execute_all(pages, force=True, jobs=2)
    t = {tuple(line.split()[:2]): float(line.split()[2]) for line in log.read_text().splitlines()}
    assert t[("start", "02_b")] < t[("end", "01_a")] and t[("start", "01_a")] < t[("end", "02_b")]  # side by side
    assert t[("start", "03_c")] >= t[("end", "02_b")]  # after its prerequisite
    # a FIRST page starts before the others (one at a time here), with no prerequisite to wait for
    log.write_text("")
    monkeypatch.setattr(bb, "AFTER", {})
    monkeypatch.setattr(bb, "FIRST", ("03_c",))
    bb.execute_all(pages[::2], force=True, jobs=1)
    assert [line.split()[:2] for line in log.read_text().splitlines()][:2] == [["start", "03_c"], ["end", "03_c"]]
    with pytest.raises(bb.BuildError, match="--jobs must be >= 1"):
        bb.execute_all(pages, force=False, jobs=0)


def test_a_failing_page_fails_the_parallel_build_after_the_running_ones_finish(sandbox, monkeypatch):
    ok = write(sandbox, "01_ok.py", '''
        # %% tags=["parameters"]
        PROFILE = "quick"
        SEED = 0
        DEVICE = "auto"

        # %%
        import time
        time.sleep(2)
        ''')
    bad = write(sandbox, "02_bad.py", '''
        # %% tags=["parameters"]
        PROFILE = "quick"
        SEED = 0
        DEVICE = "auto"

        # %%
        raise ValueError("broken")
        ''')
    later = write(sandbox, "03_later.py", "x = 1\n")
    monkeypatch.setattr(bb, "AFTER", {"03_later": "02_bad"})
    with pytest.raises(bb.BuildError, match="02_bad.*ValueError: broken"):
        bb.execute_all([(ok, PARAMS, "h"), (bad, PARAMS, "h"), (later, PARAMS, "h")], force=True, jobs=2)
    assert (sandbox / "_build/exec-cache/01_ok.json").exists()  # the running page finished and was cached
    assert not (sandbox / "book/generated/03_later.ipynb").exists()  # nothing started after the failure
    monkeypatch.setenv("BOOK_JOBS", "0")
    with pytest.raises(bb.BuildError, match="BOOK_JOBS"):
        bb.default_jobs()


def test_landing_page_key_follows_every_executed_chapter(sandbox):
    a, b = write(sandbox, "01_a.py", "x = 1\n"), write(sandbox, "02_b.py", "y = 2\n")
    with pytest.raises(bb.BuildError, match="landing page reads every chapter: 02_b has not been executed"):
        (sandbox / "book" / "generated").mkdir(parents=True)
        (sandbox / "book" / "generated" / "01_a.ipynb").write_text("{}")
        bb.chapters_hash([a, b])
    (sandbox / "book" / "generated" / "02_b.ipynb").write_text("{}")
    first = bb.chapters_hash([a, b])
    (sandbox / "book" / "generated" / "02_b.ipynb").write_text('{"changed": 1}')
    assert bb.chapters_hash([a, b]) != first


def test_unrendered_glue_is_found_in_the_html(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "ok.html").write_text("<p>0.74 (95% CI 0.59 to 0.88)</p>")
    (tmp_path / "book" / "bad.html").write_text("<p>took &lt;IPython.core.display.Markdown object&gt; ms, "
                                                "&lt;IPython.core.display.HTML object&gt;</p>")
    assert bb.unrendered_glue(tmp_path) == {"book/bad.html": 2}
