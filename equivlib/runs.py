"""Training runs as cached artifacts keyed by their configuration.

::

    run = get_run(RunConfig("forces", steps=200, eval_every=20))
    run.monitor            # the monitor table (percent vs step; flow: one row per (step, t))
    run.log                # training loss per step
    model = run.load_model(run.checkpoint_steps[-1])

A run lives in ``{cache_dir}/{config.key}/`` as ``config.json``,
``monitor.csv``, ``train_log.csv`` and ``checkpoints/step_{k}.pt`` (at a few
log-spaced steps, including 0 and the last).  It is written to a temporary
folder and renamed when complete; an entry with missing or unreadable files is
retrained (with a logged warning).  Training is seeded by ``config.seed``
(model initialisation, minibatches, augmentation and noise), so the same
configuration gives the same numbers on the same device.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import __version__
from .config import Capped, ParameterError, check_profile, derived_generator, resolve_device
from .tasks import check_arch, check_size, check_task, make_model, make_task
from .training import train

__all__ = ["RunConfig", "Run", "get_run", "train_runs", "runs_dir", "default_executor", "checkpoint_steps", "source_hash", "code_digest"]

log = logging.getLogger(__name__)
_FILES = ("config.json", "monitor.csv", "train_log.csv")


def code_digest(source: str) -> str:
    """What a module *does*: its syntax tree without docstrings, comments or layout, as text.

    Docstring, comment and formatting edits leave it unchanged, so they do not
    retrain cached runs; any change to the code does change it.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


@functools.lru_cache(maxsize=None)
def source_hash(root: Path | None = None) -> str:
    """SHA-256 of equivlib's ``*.py`` files (paths and :func:`code_digest`), computed once per process."""
    root = Path(__file__).resolve().parent if root is None else Path(root)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(str(f.relative_to(root)).encode())
        h.update(code_digest(f.read_text(encoding="utf-8")).encode())
    return h.hexdigest()


def checkpoint_steps(steps: int, n: int = 6) -> list[int]:
    """``0`` and about ``n`` log-spaced steps up to ``steps`` (always included)."""
    if steps < 0:
        raise ParameterError(f"steps must be >= 0, got {steps}")
    if steps == 0:
        return [0]
    pts = np.unique(np.round(np.geomspace(1, steps, n)).astype(int))
    return sorted({0, steps, *(int(p) for p in pts)})


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run.

    ``extra`` holds keyword arguments of the task constructor (e.g.
    ``{"method": "mmff"}``, ``{"grid_size": 16}``), plus optionally
    ``"monitor"``: keyword arguments of ``task.monitor`` (``n_elements``,
    ``scheme``, ``times``...), ``"checkpoints"``: a list of steps, and (smoke runs
    only) ``"smoke"``: ``{"steps", "evals"}`` of the run this capped one stands for.
    ``augment=False`` trains without the random group elements.
    ``eval_every`` (default 500) is the monitor's regular interval; one
    evaluation costs about 3-10 training steps of the quick tasks (a float32
    pass over held-out samples x group elements, summed in float64), so 500
    keeps the monitor under 2 % of training time.  Add log-spaced steps through
    ``extra["monitor"]["at"]`` to resolve the early dip.
    ``arch`` picks the architecture (``equivlib.tasks.ARCHS``; ``"e3nn"`` is
    the exactly equivariant force field).  ``n_train`` trains on a seeded random
    subset of that many training examples (default: all).  ``seed`` seeds the data
    (generation, split, subset) and, unless ``train_seed`` is given, the training
    (initialisation, minibatches, augmentation); ``train_seed`` repeats a run with
    the same data and held-out set but another initialisation and minibatch order.
    """

    task: str
    model_size: str = "small"
    profile: str = "quick"
    seed: int = 0
    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"
    eval_every: int = 500
    augment: bool = True
    arch: str = "default"
    n_train: int | None = None
    train_seed: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_task(self.task)
        check_size(self.model_size)
        check_arch(self.task, self.arch)
        if self.n_train is not None and (isinstance(self.n_train, bool) or not isinstance(self.n_train, (int, np.integer))
                                         or self.n_train < 1):
            raise ParameterError(f"RunConfig.n_train must be a positive integer or None, got {self.n_train!r}")
        if self.train_seed is not None and (isinstance(self.train_seed, bool)
                                            or not isinstance(self.train_seed, (int, np.integer)) or self.train_seed < 0):
            raise ParameterError(f"RunConfig.train_seed must be a non-negative integer or None, got {self.train_seed!r}")
        check_profile(self.profile)
        for k in ("seed", "steps", "batch_size", "eval_every"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if k in ("seed", "steps") else 1):
                raise ParameterError(f"RunConfig.{k} must be a {'non-negative' if k in ('seed', 'steps') else 'positive'}"
                                     f" integer, got {v!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ParameterError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        try:
            json.dumps(self.extra, sort_keys=True)
        except TypeError as e:
            raise ParameterError(f"RunConfig.extra must be JSON-serialisable: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def key(self) -> str:
        """``{task}-{size}-{profile}-s{seed}-{hash}``.

        The hash covers the config, equivlib's version and its code
        (:func:`source_hash`: docstrings and comments excluded), so a change to
        the library's code retrains rather than reusing stale runs.
        """
        blob = json.dumps({"config": self.to_dict(), "equivlib": __version__, "source": source_hash()},
                          sort_keys=True)
        h = hashlib.sha256(blob.encode()).hexdigest()[:16]
        return f"{self.task}-{self.model_size}-{self.profile}-s{self.seed}-{h}"

    def replace(self, *, monitor: dict | None = None, **change) -> "RunConfig":
        """A copy with fields changed; ``monitor`` updates the monitor keywords in ``extra["monitor"]``.

        ``config.replace(batch_size=1, monitor={"n_elements": 4})`` keeps every
        other setting, including the rest of the monitor's keywords.
        """
        if monitor is not None:
            extra = {**change.pop("extra", self.extra)}
            extra["monitor"] = {**(extra.get("monitor") or {}), **monitor}
            change["extra"] = extra
        return dataclasses.replace(self, **change)

    def make_task(self, device=None):
        """The run's task (``extra`` without the monitor and checkpoint keys); seeds nothing itself."""
        extra = {k: v for k, v in self.extra.items() if k not in ("monitor", "checkpoints", "smoke")}
        return make_task(self.task, self.profile, self.seed, device=device, **extra)

    def monitor_kwargs(self) -> dict:
        """Keyword arguments of ``task.monitor`` (``extra["monitor"]``; ``at`` always includes the last step)."""
        kw = dict(self.extra.get("monitor") or {})
        kw["at"] = sorted({*(int(s) for s in kw.get("at", ())), self.steps})
        return kw

    def eval_steps(self) -> list[int]:
        """The steps at which the monitor evaluates: every ``eval_every``, the ``at`` list and the last step."""
        return sorted(set(range(0, self.steps + 1, self.eval_every)) | set(self.monitor_kwargs()["at"]))

    def checkpoints(self) -> list[int]:
        steps = self.extra.get("checkpoints")
        if steps is None:
            return checkpoint_steps(self.steps)
        return sorted({int(s) for s in steps if 0 <= int(s) <= self.steps})


@dataclass
class Run:
    config: RunConfig
    path: Path
    monitor: pd.DataFrame
    log: pd.DataFrame
    checkpoint_steps: list
    trained: bool = False  # True when this call trained it (False: loaded from the cache)
    device: torch.device = torch.device("cpu")

    @property
    def n_parameters(self) -> int:
        """Number of parameters of the run's model (all tensors in ``model.parameters()``)."""
        return sum(p.numel() for p in self.load_model().parameters())

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds of training, monitor evaluations excluded (``log["seconds"]`` at the last step)."""
        return float(self.log["seconds"].iloc[-1]) if len(self.log) else 0.0

    def load_model(self, step: int | None = None, device=None) -> torch.nn.Module:
        """The model at checkpoint ``step`` (default: the last), in eval mode."""
        step = self.checkpoint_steps[-1] if step is None else int(step)
        if step not in self.checkpoint_steps:
            raise ParameterError(f"no checkpoint at step {step}; have {self.checkpoint_steps}")
        device = self.device if device is None else resolve_device(device)
        model = make_model(self.config.task, self.config.model_size, device=device, arch=self.config.arch)
        state = torch.load(self.path / "checkpoints" / f"step_{step}.pt", map_location=device, weights_only=True)
        model.load_state_dict(state)
        return model.eval()


class _Checkpointing:
    """Wraps a monitor: saves ``model.state_dict()`` at the given steps, then delegates."""

    def __init__(self, monitor, model, steps, folder: Path):
        self.monitor, self.model, self.steps, self.folder = monitor, model, set(steps), folder
        self.planned_evals = None  # smoke runs: the evaluations of the run this one stands for

    def __call__(self, step: int):
        if step in self.steps:
            state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            torch.save(state, self.folder / f"step_{step}.pt")
        return self.monitor(step)

    @property
    def seconds(self) -> float:
        return self.monitor.seconds


def _load(config: RunConfig, path: Path, device) -> Run:
    """Load a complete cache entry; raise on anything missing or unreadable."""
    for f in _FILES:
        if not (path / f).is_file():
            raise FileNotFoundError(f"missing {f}")
    stored = json.loads((path / "config.json").read_text())
    if stored.get("config") != json.loads(json.dumps(config.to_dict())):
        raise ValueError("config.json does not match the requested configuration")
    steps = config.checkpoints()
    if stored.get("checkpoint_steps") != steps:
        raise ValueError("checkpoint steps differ")
    for s in steps:
        torch.load(path / "checkpoints" / f"step_{s}.pt", map_location="cpu", weights_only=True)
    monitor = pd.read_csv(path / "monitor.csv")
    train_log = pd.read_csv(path / "train_log.csv")
    # the last step is always evaluated (added to the monitor's ``at`` in _train)
    if monitor.empty or "percent" not in monitor or int(monitor["step"].max()) != config.steps:
        raise ValueError("monitor.csv is incomplete")
    if len(train_log) != config.steps or "seconds" not in train_log:
        raise ValueError("train_log.csv is incomplete")
    return Run(config, path, monitor, train_log, steps, trained=False, device=device)


def _train(config: RunConfig, path: Path, device, progress: bool) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    (tmp / "checkpoints").mkdir(parents=True)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            train_seed = config.seed if config.train_seed is None else config.train_seed
            torch.manual_seed(train_seed)
            task = config.make_task(device)
            data = task.data
            if config.n_train is not None:
                n = next(iter(data.values())).shape[0]
                if config.n_train > n:
                    raise ParameterError(f"n_train={config.n_train} exceeds the {n} training examples of "
                                         f"{config.task!r} ({config.profile})")
                keep = torch.randperm(n, generator=derived_generator(config.seed, "train-subset"))[:config.n_train]
                data = {k: v[keep.to(v.device)] for k, v in data.items()}
            model = task.make_model(config.model_size, device=device, arch=config.arch)
            monitor = task.monitor(model, config.eval_every, **config.monitor_kwargs())
            steps = config.checkpoints()
            checkpointing = _Checkpointing(monitor, model, steps, tmp / "checkpoints")
            n_steps, smoke = config.steps, config.extra.get("smoke")
            if smoke:  # a smoke run: tell the ledger the size of the run it stands for
                n_steps, checkpointing.planned_evals = Capped(config.steps, planned=smoke["steps"]), smoke["evals"]
            t0 = time.perf_counter()
            train_log = train(model, data, steps=n_steps, batch_size=config.batch_size,
                              forward=task.forward, loss=task.loss, optimizer=config.optimizer, lr=config.lr,
                              augment=task.batch_transform(config.augment),
                              monitor=checkpointing,
                              generator=torch.Generator().manual_seed(train_seed), progress=progress,
                              desc=config.key)
        table = monitor.table()
        clock = dict(zip(train_log["step"], train_log["seconds"]))
        table["train_seconds"] = table["step"].map(lambda k: clock.get(k, 0.0))  # step 0: before training
        table.to_csv(tmp / "monitor.csv", index=False)
        train_log.to_csv(tmp / "train_log.csv", index=False)
        info = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in task.info.items()}
        (tmp / "config.json").write_text(json.dumps({
            "config": config.to_dict(), "key": config.key, "equivlib": __version__, "torch": torch.__version__,
            "device": str(device), "checkpoint_steps": steps, "task_info": info,
            "n_examples": int(next(iter(data.values())).shape[0]),
            "seconds": time.perf_counter() - t0, "train_seconds": train_log.attrs.get("seconds"),
            "monitor_seconds": train_log.attrs.get("monitor_seconds")}, indent=1, sort_keys=True, default=str))
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def runs_dir() -> Path:
    """Where runs are cached: ``$EQUIVLIB_RUNS`` if set (``make smoke`` keeps its runs apart), else ``_build/runs``."""
    return Path(os.environ.get("EQUIVLIB_RUNS") or "_build/runs")


def get_run(config: RunConfig, cache_dir=None, force: bool = False, progress: bool = True,
            device=None) -> Run:
    """The run of ``config``: loaded from ``cache_dir`` or trained (and cached).

    ``force`` retrains even if cached.  ``device`` (default CPU) is not part
    of the key.
    """
    if not isinstance(config, RunConfig):
        raise ParameterError(f"get_run needs a RunConfig, got {type(config).__name__}")
    device = torch.device("cpu") if device is None else resolve_device(device)
    cache_dir = runs_dir() if cache_dir is None else cache_dir
    path = Path(cache_dir) / config.key
    if path.exists() and not force:
        try:
            return _load(config, path, device)
        except Exception as e:  # noqa: BLE001 - any damage means: retrain
            log.warning("run cache entry %s is corrupt or partial (%s: %s); retraining", path, type(e).__name__, e)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):  # one trainer per entry, across processes and machines sharing the cache
        if path.exists() and not force:  # another worker finished it while we waited
            try:
                return _load(config, path, device)
            except Exception:  # noqa: BLE001 - damaged: retrain below
                pass
        for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a worker that died mid-training
            shutil.rmtree(stale, ignore_errors=True)
        _train(config, path, device, progress)
    run = _load(config, path, device)
    run.trained = True
    return run


# --------------------------------------------------------------------------- fan-out


def _lock(path: Path):
    """An exclusive lock for one cache entry (``fcntl`` via ``filelock``: released when the holder dies)."""
    from filelock import FileLock

    return FileLock(str(path.parent / f".{path.name}.lock"))


def _train_in_worker(config: dict, cache_dir: str, device: str, threads: int | None) -> tuple[str, bool]:
    """Executor task: train one configuration into the cache (unless another worker did).

    Returns ``(key, trained)``: ``trained`` is False when the run was already there.
    """
    from .config import set_deterministic, set_threads

    set_threads(threads, env=False)  # the pool's sizing, not the chapter kernel's EQUIVLIB_THREADS
    set_deterministic()
    cfg = RunConfig(**config)
    return cfg.key, get_run(cfg, cache_dir=cache_dir, device=device, progress=False).trained


def default_executor(max_workers: int | None = None, device=None) -> Executor | None:
    """The local fan-out: a process pool, or ``None`` (train in this process).

    ``max_workers`` defaults to the environment variable ``EQUIVLIB_WORKERS``, else
    to the number of CPU cores on a CPU and 1 on a GPU (runs on one GPU do not
    gain from sharing it).  Each worker is a fresh ``spawn``-ed interpreter and
    trains with ``cores // workers`` torch threads (see :func:`train_runs`).
    Returns ``None`` for one worker.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    dev = resolve_device(device) if device is not None else torch.device("cpu")
    if max_workers is None:
        env = os.environ.get("EQUIVLIB_WORKERS")
        if env is not None:
            if not env.isdigit() or int(env) < 1:
                raise ParameterError(f"EQUIVLIB_WORKERS must be a positive integer, got {env!r}")
            max_workers = int(env)
        else:
            max_workers = (os.cpu_count() or 1) if dev.type == "cpu" else 1
    if max_workers < 1:
        raise ParameterError(f"max_workers must be >= 1, got {max_workers}")
    if max_workers == 1:
        return None
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"))


def train_runs(configs, *, executor: Executor | str | None = None, cache_dir=None, device=None,
               threads_per_worker: int | None = None, progress: bool = True, poll: float = 2.0,
               first=()) -> list[Run]:
    """Every run of ``configs``: the missing ones trained concurrently through ``executor``, then all loaded.

    ``executor`` is anything with ``submit(fn, *args)`` whose workers share
    ``cache_dir`` (default :func:`runs_dir`): a :class:`concurrent.futures.Executor` (a process pool, a
    ``dask.distributed`` client's ``get_executor()``), or ``submitit``'s
    ``AutoExecutor`` for a SLURM cluster, whose jobs are not futures (they are
    polled through ``done()`` every ``poll`` seconds); ``"auto"`` makes
    :func:`default_executor` (and shuts it down afterwards); ``None`` trains one
    after another here.  The cache is the meeting point: each configuration is
    trained under a lock on its cache entry, written to a temporary folder and
    renamed when complete, so two workers never train the same run and a crashed
    worker leaves nothing a later call would trust.  ``threads_per_worker`` is the
    torch thread count inside each worker: on a CPU 1 by default (one run per core,
    and numbers that do not depend on the machine's core count; a run trained
    here, with more threads, can differ from it in the last digits); on a GPU,
    cores / workers.  A failed run raises here with the configuration's key.
    Missing runs are submitted longest first, except those of ``first`` (configurations
    among ``configs``: the runs another process is waiting for), which go before all others.
    """
    if isinstance(executor, str):
        if executor != "auto":
            raise ParameterError(f"executor must be an Executor, 'auto' or None, got {executor!r}")
        auto = default_executor(device=device)
        try:
            return train_runs(configs, executor=auto, cache_dir=cache_dir, device=device,
                              threads_per_worker=threads_per_worker, progress=progress, first=first)
        finally:
            if auto is not None:
                auto.shutdown()
    configs, first = list(configs), list(first)
    if not all(isinstance(c, RunConfig) for c in configs + first):
        raise ParameterError("train_runs needs RunConfig objects (configs and first)")
    first_keys = {c.key for c in first}
    if not first_keys <= {c.key for c in configs}:
        raise ParameterError(f"first names runs that are not in configs: {sorted(first_keys - {c.key for c in configs})}")
    cache_dir = runs_dir() if cache_dir is None else cache_dir
    dev = torch.device("cpu") if device is None else resolve_device(device)
    missing, seen = [], set()
    for c in configs:
        if c.key not in seen and not _complete(c, Path(cache_dir) / c.key):
            seen.add(c.key)
            missing.append(c)
    if executor is not None and missing:
        workers = getattr(executor, "_max_workers", None) or 1
        threads = threads_per_worker or (1 if dev.type == "cpu" else max(1, (os.cpu_count() or 1) // workers))
        # ``first`` first (another process waits for them), then longest first (a rough cost: steps x batch x
        # model size), so a long run does not start last and finish alone while the other workers idle
        missing.sort(key=lambda c: (c.key not in first_keys, -_rough_cost(c)))
        futures = {executor.submit(_train_in_worker, c.to_dict(), str(cache_dir), str(dev), threads): c
                   for c in missing}
        bar = tqdm(total=len(futures), desc="training runs", disable=not progress, mininterval=2)
        errors = []
        for fut in _as_completed(list(futures), poll):
            bar.update()
            exc = fut.exception()
            if exc is not None:
                errors.append(f"{futures[fut].key}: {type(exc).__name__}: {exc}")
        bar.close()
        if errors:
            raise RuntimeError(f"{len(errors)} of {len(futures)} runs failed:\n  " + "\n  ".join(errors))
    return [get_run(c, cache_dir=cache_dir, device=dev, progress=progress) for c in configs]


def _as_completed(jobs: list, poll: float):
    """Yield each of ``jobs`` as it finishes: futures through :func:`as_completed`, others (submitit jobs) by
    polling their ``done()`` every ``poll`` seconds."""
    if all(isinstance(j, Future) for j in jobs):
        yield from as_completed(jobs)
        return
    for j in jobs:
        if not (callable(getattr(j, "done", None)) and callable(getattr(j, "exception", None))):
            raise ParameterError(f"the executor's submit returned a {type(j).__name__}, which has no done() and "
                                 "exception(): pass a concurrent.futures.Executor or a submitit executor")
    if not poll > 0:
        raise ParameterError(f"poll must be > 0 seconds, got {poll!r}")
    left = list(jobs)
    while left:
        finished = [j for j in left if j.done()]
        for j in finished:
            left.remove(j)
            yield j
        if left and not finished:
            time.sleep(poll)


_SIZE_COST = {"small": 1.0, "medium": 3.0, "base": 10.0}


def _rough_cost(config: RunConfig) -> float:
    """Relative training cost for scheduling only: steps x batch size x model size."""
    return config.steps * config.batch_size * _SIZE_COST.get(config.model_size, 1.0)


def _complete(config: RunConfig, path: Path) -> bool:
    try:
        _load(config, path, torch.device("cpu"))
        return True
    except Exception:  # noqa: BLE001 - missing or damaged: not complete
        return False
