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
