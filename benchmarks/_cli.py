"""Command-line set-up shared by the benchmarks (not a benchmark itself: ``make bench`` runs ``bench_*.py``)."""
from __future__ import annotations

import argparse

import torch

from equivlib.config import ParameterError, resolve_device, set_threads


def device_from_args(ap: argparse.ArgumentParser, args, *, threads: bool = True) -> torch.device:
    """``args.device`` resolved (a bad one ends the program through ``ap.error``); ``args.threads`` applied."""
    try:
        device = resolve_device(args.device)
    except ParameterError as exc:
        ap.error(str(exc))
    if threads:
        set_threads(args.threads)
    return device


def write_results(out, meta: dict, rows: list, verdicts: list) -> None:
    """Write a benchmark's JSON: ``meta``, ``rows`` and ``verdicts`` (``(target, passed, value)`` triples)."""
    import json
    import platform
    from pathlib import Path

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(), **meta}
    out.write_text(json.dumps({"meta": meta, "rows": rows,
                               "verdicts": [{"target": n, "pass": ok, "value": v} for n, ok, v in verdicts]},
                              indent=2, default=str))
