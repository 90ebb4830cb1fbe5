#!/usr/bin/env python
"""Open every page of the built book in headless Chromium and fail on what a reader would see broken.

    python tools/check_pages.py                 # checks _build/html (run make book first)
    python tools/check_pages.py --html DIR      # another build

Per page it fails on: a JavaScript error (an uncaught exception or a console error), a
resource of the book that did not load, a MathJax error or TeX left unrendered in the
text, an image that did not load, and an internal link or anchor that does not resolve.
It saves a screenshot of each page's first screen and a ``report.json`` in
``_build/page-check/``.

The browser is Debian's ``chromium`` (installed with ``apt-get`` when missing and this
runs as root), driven by Playwright through its ``executable_path``: no browser download.
Pages are served over HTTP from a local port, as a reader's browser would load them.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
OUT = ROOT / "_build" / "page-check"
#: pages Sphinx writes that are not the book's (no content of ours to check)
SKIP = {"genindex.html", "search.html", "py-modindex.html"}
#: TeX that survived rendering, in visible text outside code: display or inline delimiters, environments,
#: and $...$ holding a TeX command
RAW_TEX = r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\$[^$\n]{0,200}\\[A-Za-z]+[^$\n]{0,200}\$"

CHECK_JS = """(rawTex) => {
  const root = document.querySelector("main") || document.body;
  const clone = root.cloneNode(true);
  clone.querySelectorAll("pre, code, script, style, mjx-container, mjx-assistive-mml, .highlight, dt.sig")
       .forEach(e => e.remove());
  const text = clone.innerText || "";
  const re = new RegExp(rawTex, "g");
  const tex = [];
  let m;
  while ((m = re.exec(text)) !== null && tex.length < 5) {
    tex.push(text.slice(Math.max(0, m.index - 40), m.index + m[0].length + 40).replace(/\\s+/g, " "));
  }
  const merr = document.querySelectorAll("mjx-merror, .MathJax_Error, [data-mjx-error]");
  const images = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
                                     .map(i => i.getAttribute("src"));
  return {tex, mathjaxErrors: [...merr].slice(0, 5).map(e => e.getAttribute("data-mjx-error") || e.textContent),
          brokenImages: images, hasMathJax: !!window.MathJax};
}"""


class CheckError(RuntimeError):
    pass


def find_chromium(install: bool = True) -> str:
    """Path of Debian's chromium; installed with apt-get when missing (as root), else a clear error."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):  # the last: GitHub's runners
        path = shutil.which(name)
        if path:
            return path
    if install and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        print("chromium is missing: installing Debian's package (apt-get install chromium)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                    "chromium"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise CheckError(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        return find_chromium(install=False)
    raise CheckError("no chromium found: install Debian's package (sudo apt-get install chromium) or put a "
                     "chromium binary on PATH")


def pages(html: Path) -> list[Path]:
    found = sorted(p for p in html.rglob("*.html") if p.name not in SKIP and "_static" not in p.parts
                   and "_sources" not in p.parts)
    if not found:
        raise CheckError(f"no pages in {html}: build the book first (make book)")
    return found


@functools.lru_cache(maxsize=None)
def _soup(path: Path) -> BeautifulSoup:
    """A page parsed once (its links, anchors and redirect are all read from it)."""
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    soup = _soup(path)
    return frozenset({t["id"] for t in soup.find_all(id=True)} | {t["name"] for t in soup.find_all("a", attrs={"name": True})})


def link_problems(html: Path, page: Path) -> list[str]:
    """Internal links (``a href``) of ``page`` whose file or anchor does not exist in the build."""
    soup = _soup(page.resolve())
    problems = []
    for a in soup.find_all("a", href=True):
        href = a["href"].strip()
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:", "data:")):
            continue  # external: not ours to resolve offline
        path, frag = urldefrag(href)
        target = (page if not path else page.parent / unquote(urlsplit(path).path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if html.resolve() not in target.parents and target != html.resolve():
            problems.append(f"link {href!r} leaves the book")
        elif not target.is_file():
            problems.append(f"link {href!r}: no such file")
        elif frag and target.suffix == ".html" and unquote(frag) not in _ids(target):
            problems.append(f"link {href!r}: no anchor #{frag} in {target.relative_to(html.resolve())}")
    return problems


def _redirect(path: Path) -> str | None:
    """The target of a ``<meta http-equiv="refresh">`` page, else None."""
    meta = _soup(path.resolve()).find("meta", attrs={"http-equiv": lambda v: v and v.lower() == "refresh"})
    if meta is None:
        return None
    content = meta.get("content", "")
    return urldefrag(content.split("url=", 1)[-1].strip() if "url=" in content.lower() else "")[0] or None


def _browser_own(url: str) -> bool:
    """Requests the browser makes by itself, not the book (the site-root favicon)."""
    return urlsplit(url).path == "/favicon.ico"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def browser_problems(html: Path, todo: list[Path], chromium: str, shots: Path) -> dict[str, list[str]]:
    from playwright.sync_api import sync_playwright

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    found: dict[str, list[str]] = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            for path in todo:
                rel = path.relative_to(html).as_posix()
                problems: list[str] = []
                target = _redirect(path)
                if target is not None:  # a meta-refresh page (index.html): its target must exist
                    if not (path.parent / target).is_file():
                        problems.append(f"redirects to {target!r}, which does not exist")
                    found[rel] = problems
                    continue
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("pageerror", lambda e, p=problems: p.append(f"JavaScript error: {e}"))
                # a failed load is also a console error: it is reported once, by the response handlers below
                page.on("console", lambda m, p=problems: p.append(f"console error: {m.text} ({m.location.get('url')})")
                        if m.type == "error" and not _browser_own(m.location.get("url", ""))
                        and not m.text.startswith("Failed to load resource") else None)
                page.on("requestfailed", lambda r, p=problems: p.append(f"failed to load {r.url}: {r.failure}")
                        if r.url.startswith(base) and not _browser_own(r.url) else None)
                page.on("response", lambda r, p=problems: p.append(f"HTTP {r.status} for {r.url}")
                        if r.url.startswith(base) and r.status >= 400 and not _browser_own(r.url) else None)
                page.goto(base + rel, wait_until="load")
                page.evaluate("async () => { if (window.MathJax && MathJax.startup && MathJax.startup.promise) "
                              "await MathJax.startup.promise; }")
                res = page.evaluate(CHECK_JS, RAW_TEX)
                problems += [f"unrendered TeX: ...{t}..." for t in res["tex"]]
                problems += [f"MathJax error: {e}" for e in res["mathjaxErrors"]]
                problems += [f"image did not load: {src}" for src in res["brokenImages"]]
                shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
                page.screenshot(path=str(shot))
                page.close()
                found[rel] = list(dict.fromkeys(problems))  # each problem once
            browser.close()
    finally:
        server.shutdown()
    return found


def check(html: Path = HTML, out: Path = OUT, chromium: str | None = None) -> dict[str, list[str]]:
    """Every problem per page (relative path -> messages); also written to ``out/report.json``."""
    html = Path(html)
    _soup.cache_clear()  # a book rebuilt in the same place is read afresh
    _ids.cache_clear()
    todo = pages(html)
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    (out / "screenshots").mkdir(parents=True)
    chromium = chromium or find_chromium()
    report = browser_problems(html, todo, chromium, out / "screenshots")
    for path in todo:
        report[path.relative_to(html).as_posix()] += link_problems(html, path)
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--html", type=Path, default=HTML, help="the built book (default: _build/html)")
    ap.add_argument("--out", type=Path, default=OUT, help="screenshots and report.json (default: _build/page-check)")
    args = ap.parse_args(argv)
    report = check(args.html, args.out)
    bad = {page: probs for page, probs in report.items() if probs}
    for page, probs in sorted(bad.items()):
        print(f"{page}:")
        for p in probs:
            print(f"  {p}")
    print(f"{len(report)} pages opened in Chromium, {len(bad)} with problems; screenshots in {args.out / 'screenshots'}")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckError as e:
        print(f"PAGE CHECK FAILED: {e}", file=sys.stderr)
        sys.exit(1)
