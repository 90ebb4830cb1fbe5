"""Sphinx extension: each script goes into a page once.

With Jupyter Book 1 on Sphinx 7.4, inline scripts that extensions add after the
builder exists (sphinx-thebe's configuration, sphinx-togglebutton's selector) reach
every page twice: once with the file name ``None`` (added to the builder) and once
with ``""`` (copied again from the registry), which Sphinx does not see as equal.
The second ``const THEBE_JS_URL = ...`` is a JavaScript error in the reader's
browser (``tools/check_pages.py`` found it).  This drops repeats (same file, same
attributes, same inline body) and keeps the first of each.
"""
from __future__ import annotations


def _key(script) -> tuple:
    # an inline script's file name is None when added to the builder and "" when copied from the registry
    attrs = getattr(script, "attributes", {}) or {}
    return getattr(script, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attrs.items()))


def unique_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for s in scripts:
        k = _key(s)
        if k not in seen:
            seen.add(k)
            kept.append(s)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", unique_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
