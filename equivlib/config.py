"""Seeds, devices, threads, profiles and chapter parameters: set in one place.

Every chapter calls :func:`chapter_setup` right after its papermill
``parameters`` cell; every test and benchmark seeds through :func:`seed_everything`.
Every seed derived from a chapter's ``SEED`` (a second generator, a noise
stream, a data split) comes from :func:`derived_seed` / :func:`derived_generator`
with a key naming its purpose, never from ``SEED + 7``; every device string goes
through :func:`resolve_device`; torch's thread count is set only by
:func:`set_threads` (called by :func:`chapter_setup` and the benchmarks).

The *smoke* mode (``EQUIVLIB_SMOKE=<steps>``, set by ``make smoke``) runs the ``full``
profile's configuration (data shapes, model sizes, group samples, monitors) with every
training loop capped at ``<steps>`` steps and the repetition counts a chapter names
shrunk (:func:`by_profile`'s ``smoke``), so that a failure of the full profile (an
allocation too large, a shape that only the full data have) shows on a CPU in minutes.
A capped step count is a :class:`Capped` integer that remembers the planned one, and
:func:`equivlib.training.train` writes what each loop cost to the smoke ledger, from
which ``tools/smoke.py`` estimates the full profile's time.
"""
from __future__ import annotations

import json
import os
import random
import zlib
from typing import Any, Iterable, Mapping

import numpy as np
import torch

PROFILES = ("quick", "full")
DEVICES = ("auto", "cpu", "cuda")
#: environment variables of the smoke mode: the step cap, and the JSON-lines file every training loop reports to
SMOKE_ENV, LEDGER_ENV = "EQUIVLIB_SMOKE", "EQUIVLIB_SMOKE_LEDGER"


class ParameterError(ValueError):
    """A chapter or function was given a parameter it cannot use."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda"`` into a :class:`torch.device`.

    ``"auto"`` picks CUDA when available, else the CPU.  Asking for ``"cuda"``
    on a machine without one is an error, never a silent fallback.
    """
    if isinstance(device, torch.device):
        device = device.type
    if device not in DEVICES:
        raise ParameterError(f"DEVICE must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParameterError("DEVICE='cuda' was requested but torch sees no CUDA device")
    return torch.device(device)


def _seed_part(v) -> int:
    if isinstance(v, str):
        return zlib.crc32(v.encode())  # stable across processes (unlike hash())
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise ParameterError(f"seed parts must be integers or strings, got {v!r}")
    return int(v)


def derived_seed(*values: int | str) -> int:
    """A deterministic 31-bit seed in ``[2, 2**31)`` from integers and strings (e.g. seed, index, purpose).

    ``derived_seed(SEED, "ch2-identity")`` gives an independent stream per
    purpose; the same values always give the same seed.  Strings enter through
    their CRC-32.  RDKit's ETKDG treats seeds 0 and 1 alike and, in
    ``EmbedMultipleConfs``, seed 0 gives identical conformers; seeds from here
    are always >= 2.
    """
    if not values:
        raise ParameterError("derived_seed needs at least one value")
    ss = np.random.SeedSequence([_seed_part(v) for v in values])
    return int(ss.generate_state(1, dtype=np.uint32)[0] % (2**31 - 2)) + 2


def derived_generator(*values: int | str, device=None) -> torch.Generator:
    """A ``torch.Generator`` seeded with :func:`derived_seed` of ``values`` (on ``device``, default CPU)."""
    g = torch.Generator() if device is None else torch.Generator(device=resolve_device(device))
    return g.manual_seed(derived_seed(*values))


def set_threads(n: int | None, *, env: bool = True) -> None:
    """Set torch's intra-op thread count (``None``: leave it); ``EQUIVLIB_THREADS`` overrides ``n``.

    On a busy machine small models lose badly to thread contention:
    ``EQUIVLIB_THREADS=1 make book`` pins every chapter to one thread (``make book``
    itself sets it to cores / concurrent chapters when it runs chapters side by side).
    ``env=False`` ignores the variable: a training worker's count is set by whoever
    sized the pool (:func:`equivlib.runs.train_runs`), not by the chapter's setting.
    """
    value = os.environ.get("EQUIVLIB_THREADS") if env else None
    if value:
        n = value
    if n is None:
        return
    try:
        n = int(n)
    except (TypeError, ValueError):
        raise ParameterError(f"thread count must be a positive integer, got {n!r}") from None
    if n < 1:
        raise ParameterError(f"thread count must be a positive integer, got {n!r}")
    torch.set_num_threads(n)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a CPU generator seeded alike."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ParameterError(f"SEED must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ParameterError(f"PROFILE must be one of {PROFILES}, got {profile!r}")
    return profile


def smoke_steps() -> int | None:
    """The smoke mode's step cap (``EQUIVLIB_SMOKE``, a positive integer), or ``None`` outside it."""
    value = os.environ.get(SMOKE_ENV)
    if not value:
        return None
    try:
        cap = int(value)
    except ValueError:
        cap = 0
    if cap < 1:
        raise ParameterError(f"{SMOKE_ENV} must be a positive integer (the step cap), got {value!r}")
    return cap


class Capped(int):
    """A step count shrunk by the smoke mode; ``planned`` is the count the full profile runs.

    It is an ``int`` everywhere (loops, JSON, run keys); only the smoke ledger reads ``planned``.
    """

    planned: int

    def __new__(cls, value: int, planned: int):
        out = super().__new__(cls, value)
        out.planned = int(planned)
        return out

    def __reduce__(self):  # pickling (process pools) keeps the planned count
        return Capped, (int(self), self.planned)

    def __repr__(self) -> str:
        return f"Capped({int(self)}, planned={self.planned})"


def capped(steps: int) -> int:
    """``steps`` outside the smoke mode; in it ``Capped(min(steps, cap), planned=steps)``."""
    cap = smoke_steps()
    if cap is None or isinstance(steps, (bool, Capped)) or not isinstance(steps, (int, np.integer)):
        return steps
    return Capped(min(int(steps), cap), planned=int(steps))


def _smoke_value(key: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _smoke_value(k, v) for k, v in value.items()}
    if key == "steps" or key.endswith("_steps"):
        return capped(value)
    return value


def by_profile(profile: str, *, quick: Any, full: Any, smoke: Any = None) -> Any:
    """Pick the value for ``profile`` (``quick`` or ``full``).

    In the smoke mode (:func:`smoke_steps`; only with ``profile="full"``) it returns
    ``full`` with every entry named ``steps`` or ``*_steps`` capped (:func:`capped`, nested
    dicts included) and then the entries of ``smoke`` put over it (nested dicts merged; a
    ``steps`` or ``*_steps`` override becomes a :class:`Capped` count that keeps the full one as planned):
    the repetitions, grids and seeds a chapter shrinks for a smoke run, by name.
    Everything else is the full profile's; an override naming no entry of ``full`` is an error.
    """
    if check_profile(profile) == "quick":
        return quick
    if smoke_steps() is None:
        return full
    if not isinstance(full, dict):
        return full if smoke is None else smoke
    return _merge(_smoke_value("", full), smoke or {})


def _merge(base: dict, over: Mapping[str, Any]) -> dict:
    unknown = sorted(set(over) - set(base))
    if unknown:
        raise ParameterError(f"smoke overrides {unknown} are not entries of the full profile {sorted(base)}")
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base[k], dict):
            v = _merge(base[k], v)
        elif ((k == "steps" or k.endswith("_steps")) and isinstance(v, (int, np.integer))
              and not isinstance(v, (bool, Capped)) and isinstance(base[k], (int, np.integer))):
            v = Capped(int(v), planned=int(getattr(base[k], "planned", base[k])))  # it stands for the full count
        out[k] = v
    return out


def smoke_report(entry: Mapping[str, Any]) -> None:
    """Append ``entry`` as one JSON line to the smoke ledger (``EQUIVLIB_SMOKE_LEDGER``), if one is set."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    with open(path, "a") as fh:  # one short write per line: lines of concurrent writers do not interleave
        fh.write(json.dumps(dict(entry), sort_keys=True) + "\n")


def check_parameters(namespace: Mapping[str, Any], known: Iterable[str]) -> None:
    """Fail loudly on parameters a chapter does not know.

    Chapter parameters are UPPER_CASE globals.  papermill only *warns* when a
    parameter is not in the ``parameters`` cell and then defines it anyway; this
    turns that into an error naming the parameter.
    """
    known = set(known)
    missing = sorted(k for k in known if k not in namespace)
    if missing:
        raise ParameterError(f"parameters cell does not define {missing}")
    unknown = sorted(
        k
        for k, v in namespace.items()
        if k.isupper() and not k.startswith("_") and k not in known and not callable(v)
        and not isinstance(v, type(os))
    )
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {unknown}; this chapter accepts {sorted(known)}"
        )


def chapter_setup(namespace: Mapping[str, Any], known: Iterable[str], *, cpu_threads: int | None = None
                  ) -> tuple[torch.device, torch.Generator]:
    """Validate a chapter's parameters, seed everything, pick the device and set the threads.

    ``namespace`` is the notebook's ``globals()``; ``known`` the names of its
    parameters (which must include ``PROFILE``, ``SEED`` and ``DEVICE``).
    ``cpu_threads`` pins torch's thread count when the chapter runs on the CPU
    (e.g. 1 for chapters of tiny batched kernels, where threads only contend);
    ``EQUIVLIB_THREADS`` overrides it.  Returns ``(device, generator)``.
    """
    known = set(known) | {"PROFILE", "SEED", "DEVICE"}
    if namespace.get("_equivlib_setup_done"):
        # re-run in the same kernel (interactive use): the chapter's own UPPER_CASE
        # constants now exist too, so only the declared parameters are checked
        check_parameters({k: namespace[k] for k in known if k in namespace}, known)
    else:
        check_parameters(namespace, known)
        if isinstance(namespace, dict):
            namespace["_equivlib_setup_done"] = True
    if check_profile(namespace["PROFILE"]) != "full" and smoke_steps() is not None:
        raise ParameterError(f"{SMOKE_ENV} is set: the smoke mode runs the full profile, got PROFILE="
                             f"{namespace['PROFILE']!r}")
    generator = seed_everything(namespace["SEED"])
    device = resolve_device(namespace["DEVICE"])
    set_threads(cpu_threads if device.type == "cpu" else None)
    set_deterministic()
    return device, generator


def set_deterministic() -> None:
    """Same seed, same numbers on every device.

    Deterministic algorithms everywhere (``torch.use_deterministic_algorithms``, which
    also makes cuDNN pick deterministic convolutions; ``warn_only``: an operation
    without a deterministic version warns instead of failing), cuDNN autotuning off,
    and for cuBLAS a fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8``, which only
    takes effect if set before CUDA is first used; an existing value is kept).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
