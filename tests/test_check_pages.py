"""tools/check_pages.py opens pages in headless Chromium and names every kind of breakage it promises to catch.

The test builds a tiny site: a clean page, a page with one of each problem, and a
redirect. It needs Debian's chromium (the check installs it when missing, as root).
"""
import importlib.util
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_pages", ROOT / "tools" / "check_pages.py")
cp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cp)

MATHJAX = Path(sysconfig.get_paths()["purelib"]) / "sphinx-mathjax-offline" / "static" / "mathjax"
# configured as Sphinx configures it: only elements of class "math" are typeset, the rest stays text
HEAD = ('<head><script>window.MathJax = {options: {ignoreHtmlClass: "tex2jax_ignore|mathjax_ignore|document", '
        'processHtmlClass: "tex2jax_process|mathjax_process|math|output_area"}};</script>'
        '<script defer src="mathjax/tex-chtml.js"></script></head>')


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    assert MATHJAX.is_dir(), f"the bundled MathJax is missing: {MATHJAX}"
    d = tmp_path_factory.mktemp("site")
    (d / "mathjax").symlink_to(MATHJAX)
    (d / "ok.png").write_bytes(_tiny_png())
    (d / "index.html").write_text('<html><head><meta http-equiv="refresh" content="0; url=good.html"></head></html>')
    (d / "good.html").write_text(f'<html>{HEAD}<body><main class="document"><h1 id="top">Good</h1>'
                                 r'<p>Inline math <span class="math">\(a^2 + b^2\)</span> and a price of $5.</p>'
                                 '<img src="ok.png"><a href="bad.html#here">there</a> <a href="#top">up</a>'
                                 '<a href="https://example.org/x">out</a>'
                                 r'<pre>code keeps $$raw$$ and \(tex\)</pre></main></body></html>')
    (d / "bad.html").write_text(f'<html>{HEAD}<body><main class="document"><h1 id="here">Bad</h1>'
                                r'<p>Left as text: $$x^2$$.</p><p>Broken: <span class="math">\(\frac{1}\)</span> and <span class="math">\(\sqrt{{2\)</span></p>'
                                '<img src="missing.png"><a href="good.html#nowhere">a</a> <a href="gone.html">b</a>'
                                '<script>throw new Error("boom")</script></main></body></html>')
    (d / "moved.html").write_text('<html><head><meta http-equiv="refresh" content="0; url=nowhere.html"></head></html>')
    return d


def _tiny_png() -> bytes:
    import base64

    return base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


def test_the_clean_page_passes_and_every_problem_is_named(site, tmp_path):
    report = cp.check(site, tmp_path / "out")
    assert set(report) == {"index.html", "good.html", "bad.html", "moved.html"}
    assert report["good.html"] == [] and report["index.html"] == []
    bad = "\n".join(report["bad.html"])
    assert "JavaScript error: boom" in bad
    assert "unrendered TeX" in bad and "$$x^2$$" in bad
    assert "MathJax error" in bad  # \frac without its second argument
    assert r"\sqrt{{2" in bad  # unbalanced braces: MathJax leaves it as text
    assert bad.count("image did not load: missing.png") == 1 and bad.count("HTTP 404") == 1  # each problem once
    assert "image did not load: missing.png" in bad
    assert "HTTP 404" in bad  # the missing image, as the server saw it
    assert "link 'good.html#nowhere': no anchor #nowhere" in bad and "link 'gone.html': no such file" in bad
    assert report["moved.html"] == ["redirects to 'nowhere.html', which does not exist"]
    shots = sorted(p.name for p in (tmp_path / "out" / "screenshots").iterdir())
    assert shots == ["bad.png", "good.png"]  # one screenshot per page opened (redirects are not opened)
    assert (tmp_path / "out" / "report.json").is_file()


def test_no_pages_is_an_error(tmp_path):
    with pytest.raises(cp.CheckError, match="build the book first"):
        cp.check(tmp_path, tmp_path / "out")
