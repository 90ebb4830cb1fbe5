"""Shared cache, checksum and command-line helpers for the generated data sets.

Every generated data set (:mod:`equivlib.data.forces`, :mod:`equivlib.data.proteins`,
:mod:`equivlib.data.voxels`) is a dict of NumPy arrays plus a JSON metadata dict,
stored as one ``.npz`` file whose SHA-256 is kept beside it.  Where a data set is
looked for, in order:

1. the committed sample ``data/samples/<key>.npz`` (only the ``quick`` profile with
   the default seed has one), verified against ``data/samples/CHECKSUMS``;
2. the cache ``<cache_dir>/<key>.npz``, verified against ``<key>.npz.sha256``;
3. otherwise the data set is generated (deterministically from its seed) and
   written to the cache with its checksum.

A file whose checksum does not match, or whose stored generation ``spec`` differs
from the one asked for (the generation code changed), is reported with a warning
on the ``equivlib.data`` logger (printed to stderr when logging is not configured)
and regenerated into the cache.  Committed samples are never rewritten at run time.

The ``.npz`` files are written with fixed zip timestamps and without pickles, so
the same arrays always give the same bytes (and the same checksum), and loading
never executes code.

The cache directory is, in order of precedence: the ``cache_dir`` argument, the
environment variable ``EQUIVLIB_DATA_CACHE``, or ``data/cache/`` in the repository.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import ParameterError, check_profile, derived_seed, smoke_steps

__all__ = [
    "DataError",
    "REPO_ROOT",
    "SAMPLES_DIR",
    "default_cache_dir",
    "dataset_key",
    "sha256_file",
    "save_npz",
    "load_npz",
    "write_checksum",
    "verify_checksum",
    "read_samples_checksums",
    "load_or_build",
    "load_or_build_profile",
    "split_groups",
    "check_split",
    "check_loader_args",
    "pad_packed",
    "packed_offsets",
    "split_mask",
    "index_list",
    "batch_index",
    "cli_main",
    "logger",
]

logger = logging.getLogger("equivlib.data")

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_DIR = REPO_ROOT / "data" / "samples"
SAMPLES_CHECKSUMS = "CHECKSUMS"
_META_KEY = "__meta__"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
SPLITS = ("train", "test", "all")


class DataError(RuntimeError):
    """A data file is unusable (bad checksum, wrong format, wrong spec)."""


def default_cache_dir() -> Path:
    """``$EQUIVLIB_DATA_CACHE`` if set, else ``<repo>/data/cache``."""
    env = os.environ.get("EQUIVLIB_DATA_CACHE")
    return Path(env) if env else REPO_ROOT / "data" / "cache"


def dataset_key(name: str, profile: str, seed: int, variant: str | None = None) -> str:
    """File stem of a data set, e.g. ``forces-gfn2-quick-seed0``."""
    check_profile(profile)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    parts = [name] + ([variant] if variant else []) + [profile, f"seed{int(seed)}"]
    return "-".join(parts)


# --------------------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> str:
    """Write ``arrays`` and JSON ``meta`` to a byte-reproducible compressed ``.npz``.

    Object arrays are refused (they would need pickle to load).  The write is
    atomic (temporary file, then rename).  Returns the file's SHA-256.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _META_KEY in arrays:
        raise ValueError(f"array name {_META_KEY!r} is reserved")
    items = dict(arrays)
    items[_META_KEY] = np.array(json.dumps(dict(meta), sort_keys=True))
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(items):
            arr = np.asarray(items[name])
            if arr.dtype == object:
                raise ValueError(f"array {name!r} has dtype object; store strings as a fixed-width unicode array")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr if arr.flags.c_contiguous else arr.copy(), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)
    return sha256_file(path)


def load_npz(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by ``equivlib.data.cache.save_npz``: ``(arrays, meta)``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError, ...
        raise DataError(f"cannot read {path}: {exc}") from exc
    if _META_KEY not in arrays:
        raise DataError(f"{path} has no {_META_KEY!r} entry; not written by equivlib.data.cache.save_npz")
    meta = json.loads(str(arrays.pop(_META_KEY).reshape(-1)[0]))
    return arrays, meta


def write_checksum(path: str | os.PathLike, digest: str | None = None) -> Path:
    """Write ``<path>.sha256`` in ``sha256sum`` format; returns its path."""
    path = Path(path)
    digest = digest or sha256_file(path)
    out = path.with_name(path.name + ".sha256")
    out.write_text(f"{digest}  {path.name}\n")
    return out


def _read_checksum_line(text: str, name: str) -> str | None:
    for line in text.splitlines():
        parts = line.strip().split()
        if len(parts) == 2 and parts[1].lstrip("*") == name:
            return parts[0].lower()
    return None


def read_samples_checksums(samples_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """``{file name: sha256}`` from ``<samples_dir>/CHECKSUMS`` (empty if absent)."""
    f = Path(samples_dir if samples_dir is not None else SAMPLES_DIR) / SAMPLES_CHECKSUMS
    if not f.exists():
        return {}
    out = {}
    for line in f.read_text().splitlines():
        parts = line.strip().split()
        if len(parts) == 2:
            out[parts[1].lstrip("*")] = parts[0].lower()
    return out


def verify_checksum(path: str | os.PathLike, expected: str | None = None) -> bool:
    """True when ``path`` exists and its SHA-256 equals ``expected`` (or its ``.sha256`` file)."""
    path = Path(path)
    if not path.exists():
        return False
    if expected is None:
        side = path.with_name(path.name + ".sha256")
        if not side.exists():
            return False
        expected = _read_checksum_line(side.read_text(), path.name)
        if expected is None:
            return False
    return sha256_file(path) == expected.lower()


def _spec_matches(meta: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    return json.loads(json.dumps(dict(spec), sort_keys=True)) == meta.get("spec")


def _try_load(path: Path, expected: str | None, spec: Mapping[str, Any], what: str):
    """Load ``path`` if present, checksum-valid and of the right spec; else ``None`` (with a warning)."""
    if not path.exists():
        return None
    if not verify_checksum(path, expected):
        logger.warning("%s %s: checksum mismatch or missing checksum; regenerating", what, path)
        return None
    try:
        arrays, meta = load_npz(path)
    except DataError as exc:
        logger.warning("%s %s unreadable (%s); regenerating", what, path, exc)
        return None
    if not _spec_matches(meta, spec):
        logger.warning("%s %s was generated with another spec (%s != %s); regenerating",
                       what, path, meta.get("spec"), dict(spec))
        return None
    return arrays, meta


def load_or_build(
    key: str,
    spec: Mapping[str, Any],
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
    *,
    cache_dir: str | os.PathLike | None = None,
    samples_dir: str | os.PathLike | None = None,
    use_samples: bool = True,
    regenerate: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Committed sample, else cache, else ``build()`` and cache; returns ``(arrays, meta)``.

    Parameters
    ----------
    key : str
        File stem (see :func:`dataset_key`).
    spec : dict
        JSON-serialisable generation parameters (including a format version).  A
        stored file is only used when its ``meta["spec"]`` equals this.
    build : callable
        ``build() -> (arrays, meta)``; ``meta["spec"]`` is set to ``spec`` here.
    cache_dir : path, optional
        Defaults to :func:`default_cache_dir`.
    samples_dir : path, optional
        Where committed samples live; defaults to :data:`SAMPLES_DIR` (read at call time).
    use_samples : bool
        ``False`` skips the committed samples.
    regenerate : bool
        Ignore the sample and any cached file and build afresh.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fname = f"{key}.npz"
    samples_dir = Path(samples_dir) if samples_dir is not None else SAMPLES_DIR
    if not regenerate and use_samples:
        sample = Path(samples_dir) / fname
        if sample.exists():
            expected = read_samples_checksums(samples_dir).get(fname)
            if expected is None:
                logger.warning("committed sample %s has no entry in %s; regenerating into %s",
                               sample, SAMPLES_CHECKSUMS, cache_dir)
            else:
                got = _try_load(sample, expected, spec, "committed sample")
                if got is not None:
                    return got
    path = cache_dir / fname
    if not regenerate:
        got = _try_load(path, None, spec, "cached data set")
        if got is not None:
            return got
        if not path.exists():
            logger.info("data set %s not in cache %s; generating", key, cache_dir)
    arrays, meta = build()
    meta = dict(meta)
    meta["spec"] = json.loads(json.dumps(dict(spec), sort_keys=True))
    meta["key"] = key
    digest = save_npz(path, arrays, meta)
    write_checksum(path, digest)
    logger.info("wrote %s (sha256 %s)", path, digest)
    return load_npz(path)


def load_or_build_profile(
    name: str,
    profile: str,
    seed: int,
    profiles: Mapping[str, Mapping[str, Mapping[str, Any]]],
    generate: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]],
    *,
    format_version: int,
    variant: tuple[str, str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    regenerate: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`load_or_build` for data set ``name`` at a profile of its table.

    Parameters
    ----------
    name : str
        Data set name, the first part of the key (``"forces"``, ...).
    profile : {"quick", "full"}
    seed : int
    profiles : dict
        The data set's profile table; ``profiles[profile]["data"]`` are the
        generation parameters.
    generate : callable
        ``generate(**profiles[profile]["data"]) -> (arrays, meta)``.
    format_version : int
        The data set's file format version (part of the spec).
    variant : (str, str), optional
        ``(spec key, value)`` of a variant, e.g. ``("method", "gfn2")``: part of the
        spec and of the key (``forces-gfn2-quick-seed0``).

    Notes
    -----
    The spec is ``{"format", "profile", "seed", [variant key], **data}``; a stored
    file is used only when its spec equals it (see :func:`load_or_build`).  In the smoke
    mode (:func:`~equivlib.config.smoke_steps`) the full profile's ``profiles["full"]["smoke"]["data"]``
    entries (fewer molecules) replace those of ``data``, under the key ``<name>-[variant-]smoke-full-seed<seed>``.
    """
    check_profile(profile)
    key = dataset_key(name, profile, seed, variant[1] if variant else None)
    data = dict(profiles[profile]["data"])
    if profile == "full" and smoke_steps() is not None and profiles[profile].get("smoke", {}).get("data"):
        # the smoke mode: the full generation parameters with fewer molecules, in a file of its own
        data.update(profiles[profile]["smoke"]["data"])
        key = dataset_key(name, profile, seed, "-".join(filter(None, [variant[1] if variant else None, "smoke"])))
    spec = {"format": format_version, "profile": profile, "seed": int(seed),
            **(dict([variant]) if variant else {}), **data}
    return load_or_build(key, spec, lambda: generate(**data), cache_dir=cache_dir, regenerate=regenerate)


# --------------------------------------------------------------------------- splits


def split_groups(n_groups: int, test_fraction: float, seed: int) -> np.ndarray:
    """Seeded assignment of ``n_groups`` groups to train (0) / test (1).

    ``round(test_fraction * n_groups)`` groups (at least one when ``n_groups >= 2``
    and ``test_fraction > 0``) go to test.  Returns an ``int8`` array.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    n_test = int(round(test_fraction * n_groups))
    if test_fraction > 0 and n_groups >= 2:
        n_test = min(max(n_test, 1), n_groups - 1)
    rng = np.random.default_rng(derived_seed(seed, 7919))
    out = np.zeros(n_groups, dtype=np.int8)
    out[rng.permutation(n_groups)[:n_test]] = 1
    return out


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ParameterError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_loader_args(split: str, dtype) -> None:
    """The checks every ``load_*`` function starts with: a known split and a floating torch dtype."""
    import torch

    check_split(split)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ParameterError(f"dtype must be a floating torch dtype, got {dtype!r}")


def split_mask(group_split: np.ndarray, split: str) -> np.ndarray:
    """Bool mask over groups selecting ``split`` (``"all"`` selects everything)."""
    check_split(split)
    if split == "all":
        return np.ones(len(group_split), dtype=bool)
    return group_split == (1 if split == "test" else 0)


# --------------------------------------------------------------------------- CLI


def cli_main(
    name: str,
    description: str,
    build_for_profile: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]],
    argv: list[str] | None = None,
    extra_args: Callable[[argparse.ArgumentParser], None] | None = None,
    *,
    n_jobs: bool = False,
) -> int:
    """Shared ``python -m equivlib.data.<name>`` entry point.

    ``build_for_profile(profile=, seed=, cache_dir=, regenerate=, **extra)`` must
    return ``(arrays, meta)`` through :func:`load_or_build`; ``extra`` holds the
    options added by ``extra_args(parser)`` and, with ``n_jobs=True``,
    ``--n-jobs`` (worker processes).  ``--write-sample`` copies the result into
    ``data/samples/`` and updates ``CHECKSUMS`` (maintainers only; the quick
    profile's sample is committed).
    """
    parser = argparse.ArgumentParser(prog=f"python -m equivlib.data.{name}", description=description)
    parser.add_argument("--profile", choices=("quick", "full"), default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="default: $EQUIVLIB_DATA_CACHE or data/cache")
    parser.add_argument("--regenerate", action="store_true", help="ignore samples and cache; build afresh")
    parser.add_argument("--write-sample", action="store_true",
                        help="also write the result to data/samples/ and update CHECKSUMS")
    if n_jobs:
        parser.add_argument("--n-jobs", dest="n_jobs", type=int, default=1, help="worker processes")
    if extra_args is not None:
        extra_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    extra = {k: v for k, v in vars(args).items()
             if k not in {"profile", "seed", "cache_dir", "regenerate", "write_sample"}}
    arrays, meta = build_for_profile(profile=args.profile, seed=args.seed, cache_dir=args.cache_dir,
                                     regenerate=args.regenerate, **extra)
    key = meta["key"]
    print(f"{key}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(arrays.items())))
    if args.write_sample:
        SAMPLES_DIR.mkdir(parents=True, exist_ok=True)
        path = SAMPLES_DIR / f"{key}.npz"
        digest = save_npz(path, arrays, meta)
        sums = read_samples_checksums(SAMPLES_DIR)
        sums[path.name] = digest
        (SAMPLES_DIR / SAMPLES_CHECKSUMS).write_text(
            "".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, sha256 {digest})")
    return 0


# --------------------------------------------------------------------------- padding


def pad_packed(values: np.ndarray, counts: np.ndarray, fill: float | int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unpack row-concatenated ragged data into a padded array and a mask.

    Parameters
    ----------
    values : np.ndarray, shape (sum(counts), *feature)
        Items of all records, concatenated.
    counts : np.ndarray, shape (B,)
        Items per record.
    fill : scalar
        Value of padded entries.

    Returns
    -------
    padded : np.ndarray, shape (B, max(counts), *feature)
    mask : np.ndarray, shape (B, max(counts)), bool
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative integers")
    if int(counts.sum()) != len(values):
        raise ValueError(f"counts sum to {int(counts.sum())} but there are {len(values)} values")
    B = len(counts)
    A = int(counts.max()) if B else 0
    mask = np.arange(A)[None, :] < counts[:, None]
    padded = np.full((B, A) + values.shape[1:], fill, dtype=values.dtype)
    padded[mask] = values
    return padded, mask


def packed_offsets(counts: np.ndarray) -> np.ndarray:
    """Start offsets ``(B + 1,)`` of records of the given sizes in a packed array."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, dtype=np.int64))])


def batch_index(idx):
    """A batch index that keeps the batch dimension: an int ``i`` becomes the slice ``i:i+1``.

    The selection rule of every batch class here (``batch[3]`` is a batch of one).
    """
    if isinstance(idx, int):
        return slice(idx, idx + 1) if idx != -1 else slice(-1, None)
    return idx


def index_list(items, idx, length: int) -> list:
    """Apply a batch index (int, slice, list, bool/long tensor or array) to a Python list."""
    import torch

    pos = torch.arange(length)[idx]
    if pos.ndim == 0:
        pos = pos[None]
    return [items[int(i)] for i in pos]
