#!/usr/bin/env python
"""Print the glued values of executed chapters: ``python tools/glued.py book/generated/01_*.ipynb``."""
import sys

import nbformat

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    print(f"== {path}")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = {k.replace("application/papermill.record/", ""): v for k, v in out.get("data", {}).items()}
                text = "<figure>" if "image/png" in data else str(data.get("text/plain", ""))
                print(f"{name:28s} {text if len(text) < 400 else text[:400] + '…'}")
