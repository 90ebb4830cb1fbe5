#!/usr/bin/env python
"""Print the glued values of executed chapters: ``python tools/glued.py book/generated/01_*.ipynb``.

Numbers print as glued, Markdown (glued strings) as its text; figures as ``<figure>``; tables (pandas Stylers, whose
plain text is only an object address) as their cells' text, row by row, so that two
builds can be compared with ``diff``.
"""
import html
import json
import re
import sys

from equivlib.book import GLUE_JSON, read_glue


def table_text(markup: str) -> str:
    rows = re.findall(r"<tr.*?>(.*?)</tr>", markup, flags=re.S)
    cells = [[html.unescape(re.sub(r"<.*?>", "", c)).strip() for c in re.findall(r"<t[hd].*?>(.*?)</t[hd]>", r, flags=re.S)]
             for r in rows]
    return " / ".join(" | ".join(c) for c in cells)


for path in sys.argv[1:]:
    print(f"== {path}")
    for name, data in read_glue(path).items():
        text = str(data.get("text/plain", ""))
        if "image/png" in data:
            text = "<figure>"
        elif "text/markdown" in data:
            text = str(data["text/markdown"])
        elif GLUE_JSON in data:
            text = json.dumps(data[GLUE_JSON], ensure_ascii=False)
        elif "text/html" in data and text.startswith("<pandas"):
            text = table_text(str(data["text/html"]))
        print(f"{name:28s} {text}")
