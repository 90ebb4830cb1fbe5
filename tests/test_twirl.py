"""Tests for equivlib.twirl: twisted predictions, twirls and the loss decomposition."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from equivlib.groups import (
    GroupError,
    GroupSample,
    IrrepsAction,
    PermutationAction,
    VectorAction,
    VoxelAction,
    cube_group,
    cube_subset16,
    exhaustive,
    haar_so3,
    icosahedral_group,
    sample_design,
    sample_finite,
    sample_haar,
    sample_sobol,
    symmetric_group,
    tetrahedral_group,
)
from equivlib.testing import assert_equivariant, equivariance_errors
from equivlib.twirl import (
    CPU_MAX_CHUNK,
    Decomposition,
    TwirledModel,
    bootstrap_se,
    decompose,
    decompose_general,
    decompose_model,
    estimate_bytes_per_input,
    twirl,
    twisted_predictions,
)

F64 = torch.float64


# --------------------------------------------------------------------------- small models
class AtomMLP(nn.Module):
    """Non-equivariant MLP on flattened coordinates ``(B, A, 3) -> (B, A, 3)``."""

    def __init__(self, atoms=4, hidden=32, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(3 * atoms, hidden), nn.Tanh(), nn.Linear(hidden, 3 * atoms)).double()

    def forward(self, x, mask=None, t=None):
        h = x if mask is None else x * mask[..., None]
        y = self.net(h.flatten(1)).reshape(x.shape)
        if t is not None:
            y = y * (1 + t[:, None, None])
        return y


class AtomTransformer(nn.Module):
    """Tiny transformer over atoms with a padding mask and a per-sample time."""

    def __init__(self, d=16, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(3, d)
        self.time = nn.Linear(1, d)
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.out = nn.Linear(d, 3)
        self.double().eval()

    def forward(self, x, mask=None, t=None):
        h = self.inp(x)
        if t is not None:
            h = h + self.time(t[:, None, None].to(x.dtype))
        h = self.enc(h, src_key_padding_mask=None if mask is None else ~mask)
        y = self.out(h)
        return y if mask is None else y * mask[..., None]


class TinyConv(nn.Module):
    def __init__(self, c=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv3d(c, 4, 3, padding=1), nn.Tanh(), nn.Conv3d(4, c, 3, padding=1)).double()

    def forward(self, x):
        return self.net(x)


class IrrepsLinear(nn.Module):
    """Generic (non-equivariant) nonlinear map on irreps features ``(B, dim)``."""

    def __init__(self, dim, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, 16), nn.Tanh(), nn.Linear(16, dim)).double()

    def forward(self, x):
        return self.net(x)


def radial_equivariant(x, mask=None):
    """Exactly SO(3)-equivariant: per-atom radial map plus pair forces."""
    r = x.norm(dim=-1, keepdim=True)
    diff = x[:, :, None] - x[:, None]
    d = diff.norm(dim=-1, keepdim=True)
    return x * torch.tanh(r) + (diff * torch.exp(-d)).sum(2)


# --------------------------------------------------------------------------- references
def rotate(R, x):
    return x @ R.T


def twisted_loop_vectors(model, x, R, **extras):
    """Z[n, b] = R⁻¹ f(R x_b) with one forward pass per (element, sample)."""
    N, B = R.shape[:2]
    out = []
    for n in range(N):
        row = []
        for b in range(B):
            ex = {k: v[b:b + 1] for k, v in extras.items()}
            y = model(rotate(R[n, b], x[b:b + 1]), **ex)
            row.append(y[0] @ R[n, b])  # R^T applied to rows
        out.append(torch.stack(row))
    return torch.stack(out)


def direct_decomposition(Zflat, y, mask=None):
    """Plug-in (mean, equiv, total) per sample by explicit loops; ``Zflat (N, B, *out)``."""
    N, B = Zflat.shape[:2]
    L, Lm, Le = [], [], []
    for b in range(B):
        w = torch.ones_like(y[b]) if mask is None else mask[b].to(y.dtype).reshape(
            *mask[b].shape, *([1] * (y.ndim - mask.ndim))).expand_as(y[b])
        D = w.sum()
        mu = sum(Zflat[n, b] for n in range(N)) / N
        L.append(sum((w * (Zflat[n, b] - y[b]) ** 2).sum() for n in range(N)) / N / D)
        Lm.append((w * (mu - y[b]) ** 2).sum() / D)
        Le.append(sum((w * (Zflat[n, b] - mu) ** 2).sum() for n in range(N)) / N / D)
    return torch.stack(L), torch.stack(Lm), torch.stack(Le)


def assert_decomposition_matches(dec: Decomposition, Z, y, mask=None, tol=1e-10):
    Zflat = Z.reshape(-1, *Z.shape[2:])
    L, Lm, Le = direct_decomposition(Zflat, y, mask)
    assert torch.allclose(dec.L, L, atol=tol, rtol=0)
    assert torch.allclose(dec.L, dec.L_mean + dec.L_equiv, atol=tol, rtol=0)
    assert (dec.L_equiv > 0).all()
    if dec.estimator == "plugin" or dec.scheme == "exhaustive":
        assert torch.allclose(dec.L_mean, Lm, atol=tol, rtol=0)
        assert torch.allclose(dec.L_equiv, Le, atol=tol, rtol=0)
    else:  # unbiased: the variance of the block means moves from L_mean to L_equiv
        K = Z.shape[0]
        Zbar = Z.mean(1)
        mu = Zbar.mean(0)
        for b in range(y.shape[0]):
            w = torch.ones_like(y[b]) if mask is None else mask[b].to(y.dtype).reshape(
                *mask[b].shape, *([1] * (y.ndim - mask.ndim))).expand_as(y[b])
            v = sum((w * (Zbar[k, b] - mu[b]) ** 2).sum() for k in range(K)) / (K * (K - 1)) / w.sum()
            assert abs(dec.L_equiv[b] - (Le[b] + v)) < tol
            assert abs(dec.L_mean[b] - (Lm[b] - v)) < tol


def make_atoms(B=3, A=4, generator=None, with_mask=True):
    x = torch.randn(B, A, 3, dtype=F64, generator=generator)
    y = torch.randn(B, A, 3, dtype=F64, generator=generator)
    mask = None
    if with_mask:
        mask = torch.ones(B, A, dtype=torch.bool)
        mask[0, -1] = False
        mask[-1, -2:] = False
        x = x * mask[..., None]
        y = y * mask[..., None]
    return x, y, mask


# --------------------------------------------------------------------------- decomposition identity
def twisted_batched_reference(model, x, R, **extras):
    """Z[n, b] = R⁻¹ f(R x_b): explicit rotation of all N·B inputs, one forward pass."""
    N, B = R.shape[:2]
    xr = torch.einsum("nbij,baj->nbai", R, x).reshape(N * B, *x.shape[1:])
    ex = {k: v.repeat(N, *([1] * (v.ndim - 1))) for k, v in extras.items()}
    y = model(xr, **ex).reshape(N, B, *x.shape[1:])
    return torch.einsum("nbji,nbaj->nbai", R, y)


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("model_name", ["mlp", "transformer"])
@pytest.mark.parametrize("scheme", ["haar", "design_tet", "design_ico", "cube_exhaustive"])
def test_decomposition_vectors(model_name, scheme, with_mask, generator, tol):
    model = AtomMLP() if model_name == "mlp" else AtomTransformer()
    x, y, mask = make_atoms(generator=generator, with_mask=with_mask)
    B = x.shape[0]
    sample = {
        "haar": lambda: sample_haar(6, batch=B, generator=generator),
        "design_tet": lambda: sample_design(tetrahedral_group(), 2, batch=B, generator=generator),
        "design_ico": lambda: sample_design(icosahedral_group(), 2, generator=generator),
        "cube_exhaustive": lambda: exhaustive(cube_group()),
    }[scheme]()
    extras = {} if mask is None else {"mask": mask}
    with torch.no_grad():
        Z = twisted_predictions(model, x, sample, VectorAction(), extras=extras)
        Zref = twisted_batched_reference(model, x, sample.flat(B), **extras)
    assert Z.shape == (sample.n_blocks, sample.block_size, B, *x.shape[1:])
    assert torch.allclose(Z.reshape(-1, *Z.shape[2:]), Zref, atol=1e-12, rtol=0)
    for estimator in ("plugin", "unbiased"):
        dec = decompose(Z, y, sample, mask=mask, estimator=estimator)
        assert dec.scheme == sample.scheme and dec.estimator == estimator
        assert dec.n_elements == sample.n_elements
        assert_decomposition_matches(dec, Z, y, mask, tol=tol(F64))


def test_decomposition_voxels_exhaustive_cube(generator, tol):
    model = TinyConv()
    x = torch.randn(2, 2, 4, 4, 4, dtype=F64, generator=generator)
    y = torch.randn(2, 2, 4, 4, 4, dtype=F64, generator=generator)
    sample = exhaustive(cube_group())
    act = VoxelAction()
    with torch.no_grad():
        Z = twisted_predictions(model, x, sample, act, chunk_size=7)
    Zflat = Z[0]
    for n, R in enumerate(cube_group()):
        g = R.expand(1, 2, 3, 3)
        ref = act.apply_inverse(g, model(act.apply(g, x)[0])[None])[0]
        assert torch.allclose(Zflat[n], ref, atol=1e-13)
    for est in ("plugin", "unbiased"):  # unbiased == plugin for an exhaustive sample
        dec = decompose(Z, y, "exhaustive", estimator=est)
        assert_decomposition_matches(dec, Z, y, tol=tol(F64))
    # channel mask (B, C)
    cmask = torch.tensor([[True, False], [True, True]])
    dec = decompose(Z, y, "exhaustive", mask=cmask)
    assert_decomposition_matches(dec, Z, y, cmask, tol=tol(F64))


def test_decomposition_irreps(generator, tol):
    act = IrrepsAction("0e + 1o + 2e")
    model = IrrepsLinear(act.irreps.dim)
    x = torch.randn(3, act.irreps.dim, dtype=F64, generator=generator)
    y = torch.randn(3, act.irreps.dim, dtype=F64, generator=generator)
    sample = sample_haar(5, batch=3, generator=generator)
    with torch.no_grad():
        Z = twisted_predictions(model, x, sample, act)
    for n in range(5):
        for b in range(3):
            g = sample.elements[n, 0, b][None, None]
            ref = act.apply_inverse(g, model(act.apply(g, x[b:b + 1])[0])[None])[0, 0]
            assert torch.allclose(Z[n, 0, b], ref, atol=1e-12)
    for est in ("plugin", "unbiased"):
        assert_decomposition_matches(decompose(Z, y, sample, estimator=est), Z, y, tol=tol(F64))


@pytest.mark.parametrize("with_mask", [False, True])
def test_decomposition_permutations(with_mask, generator, tol):
    A = 4
    model = AtomMLP(atoms=A)
    x, y, mask = make_atoms(A=A, generator=generator, with_mask=with_mask)
    act = PermutationAction(A)
    extras = {} if mask is None else {"mask": mask}
    for sample in (exhaustive(symmetric_group(A)), sample_finite(symmetric_group(A), 5, batch=3, generator=generator)):
        with torch.no_grad():
            Z = twisted_predictions(model, x, sample, act, extras=extras)
        g = sample.flat(3)
        for n in range(sample.n_elements):
            for b in range(3):
                p = g[n, b]
                ex = {k: v[b:b + 1] for k, v in extras.items()}  # extras are passed unpermuted
                out = model(x[b:b + 1][:, p], **ex)[0]
                ref = torch.empty_like(out)
                ref[p] = out  # undo: (g⁻¹·y)[p[i]] = y[i]
                assert torch.allclose(Z.reshape(-1, *Z.shape[2:])[n, b], ref, atol=1e-13)
        mask_for_loss = mask  # padding mask in the original frame
        for est in ("plugin", "unbiased"):
            dec = decompose(Z, y, sample, mask=mask_for_loss, estimator=est)
            assert_decomposition_matches(dec, Z, y, mask_for_loss, tol=tol(F64))


# --------------------------------------------------------------------------- batching / chunking
@pytest.mark.parametrize("chunk_kwargs", [
    {"chunk_size": 1}, {"chunk_size": 3}, {"chunk_size": None}, {"memory_budget_mb": 1e-6},
    {"memory_budget_mb": None}, {"chunk_size": 10_000},
])
def test_twisted_predictions_equals_loop(chunk_kwargs, generator):
    model = AtomTransformer()
    x, _, mask = make_atoms(B=3, A=5, generator=generator)
    t = torch.rand(3, dtype=F64, generator=generator)
    sample = sample_haar(4, batch=3, generator=generator)
    with torch.no_grad():
        Z = twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask, "t": t}, **chunk_kwargs)
        ref = twisted_loop_vectors(model, x, sample.flat(3), mask=mask, t=t)
    assert Z.shape == (4, 1, 3, 5, 3)
    assert torch.allclose(Z[:, 0], ref, atol=1e-12, rtol=0)
    # the extras matter (so a wrong repetition would be caught)
    with torch.no_grad():
        Z_other = twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask, "t": t.flip(0)},
                                      **chunk_kwargs)
    assert not torch.allclose(Z_other, Z, atol=1e-6)


def test_chunking_respects_memory_budget(generator):
    calls = []

    class Recorder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = AtomMLP(atoms=5)

        def forward(self, x, **kw):
            calls.append(x.shape[0])
            return self.inner(x, **kw)

    model = Recorder()
    x, _, mask = make_atoms(B=3, A=5, generator=generator)
    per = estimate_bytes_per_input(model, x, {"mask": mask})
    assert per > 0
    calls.clear()
    sample = sample_haar(100, batch=3, generator=generator)  # 300 inputs: above the probing threshold
    budget = 100.5 * per / 2**20  # room for 100 inputs per pass
    with torch.no_grad():
        Z = twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask}, memory_budget_mb=budget)
    assert calls == [100, 100, 100]
    calls.clear()
    with torch.no_grad():  # default budget, no CPU cap: one pass
        Z2 = twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask}, cpu_max_chunk=None)
    assert calls == [300]
    calls.clear()
    with torch.no_grad():  # the default CPU cap: at most CPU_MAX_CHUNK (256) inputs per pass
        Z3 = twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask})
    assert calls == [CPU_MAX_CHUNK, 300 - CPU_MAX_CHUNK]
    calls.clear()
    with torch.no_grad():  # never fewer than B inputs per pass (the chunk of a loop over elements)
        twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask}, cpu_max_chunk=1)
    assert calls == [3] * 100
    calls.clear()
    with pytest.raises(GroupError, match="cpu_max_chunk must be a positive int or None"):
        twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask}, cpu_max_chunk=0)
    with pytest.raises(GroupError, match="chunk_size must be a positive int"):
        twisted_predictions(model, x, sample, VectorAction(), extras={"mask": mask}, chunk_size=True)
    calls.clear()
    small = sample_haar(4, batch=3, generator=generator)  # 12 inputs: never split, never probed
    with torch.no_grad():
        twisted_predictions(model, x, small, VectorAction(), extras={"mask": mask}, memory_budget_mb=1e-9)
    assert calls == [12]
    assert torch.allclose(Z, Z2, atol=1e-13) and torch.allclose(Z3, Z2, atol=1e-13)


def test_few_but_large_inputs_are_probed_and_split():
    """Eight 3D grids of 5 MiB each: fewer than 256 inputs, but too large to go in one pass blindly."""
    calls = []

    def model(v):
        calls.append(v.shape[0])
        return v * 2.0

    x = torch.randn(2, 1, 88, 88, 88, dtype=torch.float64)  # ~5.2 MiB per grid
    sample = exhaustive(cube_group()[:4])  # 8 transformed inputs, ~42 MiB
    with torch.no_grad():
        Z = twisted_predictions(model, x, sample, VoxelAction(), memory_budget_mb=30.0)
    assert len(calls) > 3 and sum(calls[-(len(calls) - 2):]) == 8  # after the 2 probe calls: split passes
    assert max(calls[2:]) < 8
    assert torch.equal(Z, (2 * x)[None, None].expand_as(Z))  # g⁻¹ f(g x) = 2x for this equivariant f


def test_twirl_and_gradients_match_loop(generator):
    model = AtomMLP()
    x, y, _ = make_atoms(with_mask=False, generator=generator)
    sample = sample_haar(3, batch=3, generator=generator)
    mu = twirl(model, x, sample, VectorAction(), chunk_size=2)
    Z = twisted_loop_vectors(model, x, sample.flat(3))
    assert torch.allclose(mu, Z.mean(0), atol=1e-13)
    # gradients flow through the batched path and equal those of the loop
    dec = decompose_model(model, x, y, sample, VectorAction(), estimator="plugin", chunk_size=4)
    gb = torch.autograd.grad(dec.L_equiv.sum(), list(model.parameters()))
    Le = direct_decomposition(Z, y)[2]
    gl = torch.autograd.grad(Le.sum(), list(model.parameters()))
    for a, b in zip(gb, gl):
        assert torch.allclose(a, b, atol=1e-12)


# --------------------------------------------------------------------------- equivariant / non-equivariant
def test_equivariant_function_has_zero_equivariance_error(generator, tol):
    x, y, _ = make_atoms(with_mask=False, generator=generator)
    sample = sample_haar(8, batch=3, generator=generator)
    for f in (radial_equivariant, lambda z: 2.5 * z):
        Z = twisted_predictions(f, x, sample, VectorAction(), memory_budget_mb=None)
        for est in ("plugin", "unbiased"):
            dec = decompose(Z, y, sample, estimator=est)
            assert (dec.L_equiv.abs() <= tol(F64) * dec.L).all()
        assert torch.allclose(twirl(f, x, sample, VectorAction()), f(x), atol=tol(F64), rtol=0)
    A = torch.randn(3, 3, dtype=F64, generator=generator)
    nonequiv = lambda z: z @ A  # noqa: E731
    dec = decompose_model(nonequiv, x, y, sample, VectorAction())
    assert (dec.L_equiv > 1e-3 * dec.L).all()
    assert not torch.allclose(twirl(nonequiv, x, sample, VectorAction()), nonequiv(x), atol=1e-3)


def test_lequiv_is_the_distance_to_the_twirl_for_invariant_data(generator, tol):
    """Chapter 1, eq-lequiv-distance: with a G-invariant data law, L_equiv = E ||f(x) - mu(x)||^2 / D."""
    model = AtomMLP()
    G = cube_group()
    x0 = torch.randn(3, 4, 3, dtype=F64, generator=generator)
    x = torch.einsum("gij,baj->gbai", G, x0).reshape(-1, 4, 3)  # every orbit point once: the empirical law is invariant
    y = torch.zeros_like(x)
    act = VectorAction()
    Z = twisted_predictions(model, x, exhaustive(G), act, memory_budget_mb=None)
    dec = decompose(Z, y, exhaustive(G), estimator="plugin")
    mu = twirl(model, x, exhaustive(G), act)
    direct = ((model(x) - mu) ** 2).mean(dim=(-2, -1))
    assert torch.allclose(dec.L_equiv.mean(), direct.mean(), atol=tol(F64), rtol=tol(F64))
    assert dec.L_equiv.mean() > 1e-3  # the model is not equivariant, so the identity is not 0 = 0
    # without invariance (one orbit point per sample) the two differ
    Z0 = twisted_predictions(model, x0, exhaustive(G), act, memory_budget_mb=None)
    dec0 = decompose(Z0, torch.zeros_like(x0), exhaustive(G), estimator="plugin")
    direct0 = ((model(x0) - twirl(model, x0, exhaustive(G), act)) ** 2).mean(dim=(-2, -1))
    assert not torch.allclose(dec0.L_equiv.mean(), direct0.mean(), rtol=1e-3)


def test_exhaustive_twirl_is_exactly_equivariant(generator, tol):
    model = AtomMLP()
    x = torch.randn(2, 4, 3, dtype=F64, generator=generator)
    act = VectorAction()
    G = cube_group()
    cube_twirl = lambda v: twirl(model, v, exhaustive(G), act)  # noqa: E731
    assert_equivariant(cube_twirl, x, G, act, tol=tol(F64))  # all 24 elements
    # not SO(3)-equivariant, and the 16-element subset is not even cube-equivariant
    R = haar_so3(1, 1, 2, generator=generator)
    assert equivariance_errors(cube_twirl, x, GroupSample(R, "iid"), act).min() > 1e-3
    S16 = GroupSample(cube_subset16()[None, :, None], "exhaustive")
    assert equivariance_errors(lambda v: twirl(model, v, S16, act), x, G, act).max() > 1e-3


def test_exhaustive_twirl_voxels_and_twirled_model(generator, tol):
    model = TinyConv()
    act = VoxelAction()
    G = cube_group()
    x = torch.randn(1, 2, 4, 4, 4, dtype=F64, generator=generator)
    tm = TwirledModel(model, lambda B, device: exhaustive(G, device=device), act, chunk_size=8)
    with torch.no_grad():
        assert torch.allclose(tm(x), twirl(model, x, exhaustive(G), act), atol=1e-14)
    assert_equivariant(tm, x, G[[1, 5, 13, 23]], act, tol=tol(F64))
    # the plain model is not equivariant (so the check above has teeth)
    assert equivariance_errors(model, x, G[5:6], act).min() > 1e-3


# --------------------------------------------------------------------------- unbiasedness by simulation
def _pool(generator, P=2000, B=3):
    model = AtomMLP(seed=3)
    x = torch.randn(B, 4, 3, dtype=F64, generator=generator)
    y = torch.randn(B, 4, 3, dtype=F64, generator=generator)
    with torch.no_grad():
        Z = twisted_predictions(model, x, sample_haar(P, batch=B, generator=generator), VectorAction())[:, 0]
    return Z, y  # (P, B, A, 3)


def test_estimators_unbiased_by_resampling(generator):
    P, B, n_rep = 2000, 3, 4000
    pool, y = _pool(generator, P, B)
    D = pool[0, 0].numel()
    mu = pool.mean(0)
    sigma2 = ((pool - mu) ** 2).flatten(2).sum(-1).mean(0) / D  # population variance (divide by P)
    Lmean_true = ((mu - y) ** 2).flatten(1).sum(-1) / D
    for N in (2, 5, 10):
        idx = torch.randint(P, (N, n_rep, B), generator=generator)
        Z = pool[idx, torch.arange(B)]  # (N, n_rep, B, A, 3)
        Z = Z.reshape(N, 1, n_rep * B, *pool.shape[2:])  # resamples packed into the batch axis
        yy = y.repeat(n_rep, 1, 1)
        res = {}
        for est in ("unbiased", "plugin"):
            d = decompose(Z, yy, "iid", estimator=est)
            res[est] = {k: getattr(d, k).reshape(n_rep, B) for k in ("L_equiv", "L_mean", "L")}
        for est, q in res.items():
            for name, truth, plugin_expect in (
                ("L_equiv", sigma2, sigma2 * (N - 1) / N),
                ("L_mean", Lmean_true, Lmean_true + sigma2 / N),
            ):
                m, se = q[name].mean(0), q[name].std(0) / math.sqrt(n_rep)
                if est == "unbiased":
                    assert ((m - truth).abs() < 4 * se).all(), (N, name, m, truth, se)
                else:
                    assert ((m - plugin_expect).abs() < 4 * se).all(), (N, name, m, plugin_expect, se)
                    if N == 2:  # the bias of the plug-in estimator is detected
                        assert ((m - truth).abs() > 4 * se).all(), (N, name, m, truth, se)
        # the total is unbiased for both, and identical
        assert torch.allclose(res["plugin"]["L"], res["unbiased"]["L"], atol=1e-12)


@pytest.mark.parametrize("draw", [lambda B, g: sample_design(tetrahedral_group(), 2, batch=B, generator=g),
                                  lambda B, g: sample_sobol(8, 3, batch=B, generator=g)],
                         ids=["tetrahedral x2", "sobol 3x8"])
def test_design_estimator_unbiased(generator, draw):
    B, n_rep = 2, 400
    model = AtomMLP(seed=5, hidden=16)
    x = torch.randn(B, 4, 3, dtype=F64, generator=generator)
    y = torch.randn(B, 4, 3, dtype=F64, generator=generator)
    with torch.no_grad():
        # high-precision reference: 20k Haar rotations per sample, plug-in
        Zr = twisted_predictions(model, x, sample_haar(20000, batch=B, generator=generator), VectorAction())[:, 0]
        D = Zr[0, 0].numel()
        mu = Zr.mean(0)
        per = ((Zr - mu) ** 2).flatten(2).sum(-1) / D  # (20000, B)
        ref_equiv, ref_se = per.mean(0), per.std(0) / math.sqrt(len(per))
        ref_mean = ((mu - y) ** 2).flatten(1).sum(-1) / D
        # many independent samples of independent blocks, packed into the batch axis
        xr, yr = x.repeat(n_rep, 1, 1), y.repeat(n_rep, 1, 1)
        s = draw(B * n_rep, generator)
        Z = twisted_predictions(model, xr, s, VectorAction())
    d = decompose(Z, yr, s)
    Le, Lm = d.L_equiv.reshape(n_rep, B), d.L_mean.reshape(n_rep, B)
    se = (Le.std(0) ** 2 / n_rep + ref_se**2).sqrt()
    assert ((Le.mean(0) - ref_equiv).abs() < 4 * se).all(), (Le.mean(0), ref_equiv, se)
    # L_mean: reference error of ||mu - y||² is ~ 2|mu - y| |δmu|, small compared with the sample's spread
    se_m = Lm.std(0) / math.sqrt(n_rep) + 2 * ref_se
    assert ((Lm.mean(0) - ref_mean).abs() < 4 * se_m).all(), (Lm.mean(0), ref_mean, se_m)
    # a design has lower variance than the same number of iid rotations
    if s.block_size == 12:
        s_iid = sample_haar(s.n_elements, batch=B * n_rep, generator=generator)
        with torch.no_grad():
            Zi = twisted_predictions(model, xr, s_iid, VectorAction())
        Le_iid = decompose(Zi, yr, s_iid).L_equiv.reshape(n_rep, B)
        assert (Le.std(0) < Le_iid.std(0)).all()


def test_two_tetrahedral_copies_twirl_an_escaip_head_exactly(generator):
    """Chapter 1's proposition: an invariant trunk with a linear head has twisted predictions of Wigner degree
    <= 2, so two turned tetrahedral copies give L, L_mean and L_equiv exactly, draw after draw."""
    from equivlib.models import EScAIPForceField

    torch.manual_seed(0)
    model = EScAIPForceField(d_model=8, n_layers=1, n_heads=2, dtype=F64).eval()
    x = 1.5 * torch.randn(3, 5, 3, dtype=F64, generator=generator)
    y = torch.randn(3, 5, 3, dtype=F64, generator=generator)
    with torch.no_grad():
        exact = decompose(twisted_predictions(model, x, sample_haar(4000, generator=generator), VectorAction()),
                          y, "iid")
        draws = [decompose(twisted_predictions(model, x, s, VectorAction()), y, s)
                 for s in (sample_design(tetrahedral_group(), 2, batch=3, generator=generator) for _ in range(5))]
    Le = torch.stack([d.L_equiv for d in draws])
    assert (Le.std(0) < 1e-12 * Le.mean(0)).all()  # no spread at all across draws
    assert (Le.mean(0) > 1e-3 * torch.stack([d.L for d in draws]).mean(0)).all()  # and far from equivariant
    assert ((Le[0] - exact.L_equiv).abs() < 4 * exact.L_equiv / 4000 ** 0.5 * 3).all()  # the Haar value, up to MC error
    # the proposition needs the head's form: an elementwise cube has twisted predictions of degree 4 in g
    cubic = lambda p: p**3  # noqa: E731
    with torch.no_grad():
        draws = [decompose(twisted_predictions(cubic, x, s, VectorAction()), y, s)
                 for s in (sample_design(tetrahedral_group(), 2, batch=3, generator=generator) for _ in range(5))]
    Lc = torch.stack([d.L_equiv for d in draws])
    assert (Lc.std(0) > 1e-6 * Lc.mean(0)).all()


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_se_matches_empirical_sd(generator):
    B, N, n_draws = 8, 32, 200
    model = AtomMLP(seed=2)
    x = torch.randn(B, 4, 3, dtype=F64, generator=generator)
    y = torch.randn(B, 4, 3, dtype=F64, generator=generator)
    xr, yr = x.repeat(n_draws, 1, 1), y.repeat(n_draws, 1, 1)
    s = sample_haar(N, batch=B * n_draws, generator=generator)
    with torch.no_grad():
        Z = twisted_predictions(model, xr, s, VectorAction())
    d = decompose(Z, yr, s)
    per_draw = {k: getattr(d, k).reshape(n_draws, B).mean(1) for k in ("L", "L_mean", "L_equiv")}
    per_draw["percent"] = 100 * per_draw["L_equiv"] / per_draw["L"]
    emp = {k: float(v.std()) for k, v in per_draw.items()}
    ratios = {k: [] for k in emp}
    for j in range(3):  # bootstrap from three single draws
        Zj = Z[:, :, j * B:(j + 1) * B]
        se = bootstrap_se(Zj, y, "iid", n_boot=400, generator=generator)
        for k in emp:
            ratios[k].append(se[f"se_{k}"] / emp[k])
    for k, r in ratios.items():
        assert all(1 / 1.5 < v < 1.5 for v in r), (k, r)


def test_bootstrap_se_shared_sample(generator):
    """Rotations shared by all samples: their errors are correlated, the bootstrap must see that."""
    B, N, n_draws = 8, 32, 200
    model = AtomMLP(seed=2)
    x0 = torch.randn(1, 4, 3, dtype=F64, generator=generator)
    x = x0 + 0.1 * torch.randn(B, 4, 3, dtype=F64, generator=generator)  # similar samples
    y = torch.randn(B, 4, 3, dtype=F64, generator=generator)
    R = haar_so3(N, 1, n_draws, generator=generator)
    s = GroupSample(R.repeat_interleave(B, dim=2), "iid")  # draw d: one set shared by its B samples
    with torch.no_grad():
        Z = twisted_predictions(model, x.repeat(n_draws, 1, 1), s, VectorAction())
    per_draw = decompose(Z, y.repeat(n_draws, 1, 1), s).L_equiv.reshape(n_draws, B).mean(1)
    emp = float(per_draw.std())
    for j in range(3):
        shared = GroupSample(R[:, :, j:j + 1], "iid")
        assert shared.batch == 1
        Zj = Z[:, :, j * B:(j + 1) * B]
        se = bootstrap_se(Zj, y, shared, n_boot=400, generator=generator)["se_L_equiv"]
        assert 1 / 1.5 < se / emp < 1.5, (se, emp)
        # resampling independently per sample ignores the correlation and is far too small here
        se_indep = bootstrap_se(Zj, y, "iid", n_boot=400, generator=generator)["se_L_equiv"]
        assert se_indep < se / 1.5


def test_bootstrap_se_errors_and_design(generator):
    Z = torch.randn(4, 3, 2, 5, dtype=F64, generator=generator)
    y = torch.randn(2, 5, dtype=F64, generator=generator)
    se = bootstrap_se(Z, y, "design", n_boot=50, generator=generator)
    assert set(se) == {"se_L", "se_L_mean", "se_L_equiv", "se_percent"}
    assert all(v > 0 and math.isfinite(v) for v in se.values())
    with pytest.raises(GroupError, match="exhaustive"):
        bootstrap_se(Z[:1], y, "exhaustive")
    with pytest.raises(GroupError, match="n_boot must be at least 2"):
        bootstrap_se(Z, y, "design", n_boot=1)
    with pytest.raises(GroupError, match="estimator"):
        bootstrap_se(Z, y, "design", estimator="mle")


def test_summary_and_percent(generator):
    Z = torch.randn(5, 1, 4, 6, dtype=F64, generator=generator)
    y = torch.randn(4, 6, dtype=F64, generator=generator)
    d = decompose(Z, y, "iid")
    s = d.summary()
    assert math.isclose(s["percent"], 100 * float(d.L_equiv.mean() / d.L.mean()), rel_tol=1e-12)
    assert math.isclose(s["L"], s["L_mean"] + s["L_equiv"], rel_tol=1e-12)
    assert math.isclose(s["se_L"], float(d.L.std() / 2), rel_tol=1e-12)
    assert s["n_samples"] == 4 and s["n_elements"] == 5
    s1 = decompose(Z[:, :, :1], y[:1], "iid").summary()
    assert math.isnan(s1["se_percent"])


# --------------------------------------------------------------------------- general losses
def mse(z, y):
    return ((z - y) ** 2).mean()


def logcosh(z, y):
    return torch.log(torch.cosh(z - y)).mean()


@pytest.mark.parametrize("scheme, K, m", [("iid", 6, 1), ("design", 3, 4), ("exhaustive", 1, 8)])
@pytest.mark.parametrize("estimator", ["plugin", "unbiased"])
def test_decompose_general_mse_equals_decompose(scheme, K, m, estimator, generator):
    Z = torch.randn(K, m, 3, 4, 3, dtype=F64, generator=generator)
    y = torch.randn(3, 4, 3, dtype=F64, generator=generator)
    g = decompose_general(Z, y, mse, scheme, estimator=estimator)
    d = decompose(Z, y, scheme, estimator=estimator)
    for k in ("L", "L_mean", "L_equiv"):
        assert torch.allclose(getattr(g, k), getattr(d, k), atol=1e-12, rtol=0), k
    assert torch.allclose(g.extra["taylor"], d.L_equiv, atol=1e-12, rtol=0)


def test_decompose_general_convex_loss(generator):
    y = torch.randn(3, 4, 3, dtype=F64, generator=generator)
    mu = y + torch.randn(3, 4, 3, dtype=F64, generator=generator)
    noise = torch.randn(8, 1, 3, 4, 3, dtype=F64, generator=generator)
    rel = []
    for scale in (1e-3, 1e-2, 1.0):
        Z = mu + scale * noise
        g = decompose_general(Z, y, logcosh, "iid", estimator="plugin")
        assert (g.L_equiv >= 0).all()  # Jensen
        assert torch.allclose(g.L, g.L_mean + g.L_equiv, atol=1e-14)
        rel.append(float(((g.extra["taylor"] - g.L_equiv).abs() / g.L_equiv).max()))
        gu = decompose_general(Z, y, logcosh, "iid", estimator="unbiased")
        assert torch.allclose(gu.L, g.L, atol=1e-14)
        assert (gu.L_equiv > g.L_equiv).all()
    assert rel[0] < 1e-3 and rel[1] < 1e-2   # second order is accurate for a small spread ...
    assert rel[0] > 1e-12                    # ... but not exact (non-quadratic loss)
    assert rel[2] > 1e-2                     # and visibly off for a large one
    # the loss really is non-quadratic: an exactly equivariant Z gives zero
    Z0 = mu.expand(8, 1, *mu.shape)
    assert torch.allclose(decompose_general(Z0, y, logcosh, "iid", estimator="plugin").L_equiv,
                          torch.zeros(3, dtype=F64), atol=1e-15)


# --------------------------------------------------------------------------- errors
def test_decompose_errors(generator):
    Z = torch.randn(4, 1, 3, 5, 3, dtype=F64, generator=generator)
    y = torch.randn(3, 5, 3, dtype=F64, generator=generator)
    with pytest.raises(GroupError, match="twisted predictions"):
        decompose(Z[..., :2], y, "iid")
    with pytest.raises(GroupError, match="twisted predictions"):
        decompose(Z[0, 0], y, "iid")
    with pytest.raises(GroupError, match="mask of shape"):
        decompose(Z, y, "iid", mask=torch.ones(3, 6, dtype=torch.bool))
    with pytest.raises(GroupError, match="mask of shape"):
        decompose(Z, y, "iid", mask=torch.ones(2, 5, dtype=torch.bool))
    bad = torch.ones(3, 5, dtype=torch.bool)
    bad[1] = False
    with pytest.raises(GroupError, match="no valid output entries"):
        decompose(Z, y, "iid", mask=bad)
    with pytest.raises(GroupError, match="at least 2"):
        decompose(Z[:1], y, "iid")
    with pytest.raises(GroupError, match="at least 2"):
        decompose(torch.randn(1, 12, 3, 5, 3, dtype=F64), y, "design")
    decompose(Z[:1], y, "iid", estimator="plugin")  # fine with the plug-in estimator
    with pytest.raises(GroupError, match="estimator must be 'plugin' or 'unbiased'"):
        decompose(Z, y, "iid", estimator="bessel")
    with pytest.raises(GroupError, match="at least 2"):
        decompose_general(Z[:1], y, mse, "iid")
    with pytest.raises(GroupError, match="twisted predictions"):
        decompose_general(Z[..., :2], y, mse, "iid")


def test_twisted_predictions_errors(generator):
    model = AtomMLP()
    x, _, mask = make_atoms(B=3, generator=generator)
    s = sample_haar(3, batch=3, generator=generator)
    act = VectorAction()
    with pytest.raises(GroupError, match="extra model input 'mask'"):
        twisted_predictions(model, x, s, act, extras={"mask": mask[:2]})
    with pytest.raises(GroupError, match="extra model input 't'"):
        twisted_predictions(model, x, s, act, extras={"t": 0.5})
    with pytest.raises(GroupError, match="expects group elements of shape"):
        twisted_predictions(model, x, sample_finite(symmetric_group(3), 2, generator=generator), act)
    bad = GroupSample(s.elements * 1.1, "iid")
    with pytest.raises(GroupError, match="not orthogonal"):
        twisted_predictions(model, x, bad, act)
    with pytest.raises(GroupError, match="drawn for 3 data samples"):
        twisted_predictions(model, x[:2], s, act)
    with pytest.raises(GroupError, match="chunk_size"):
        twisted_predictions(model, x, s, act, chunk_size=0)
    with pytest.raises(GroupError, match=r"\(B, atoms, 3\)"):
        twisted_predictions(model, x[..., :2], s, act)
    with pytest.raises(GroupError, match="leading batch"):
        twisted_predictions(model, torch.tensor(1.0, dtype=F64), s, act)


def test_pool_gives_the_pooled_ratio_and_its_delta_method_se():
    """The counterexample to 'Σ_t w_t se_t bounds the pooled SE': r_1 = 0, r_2 = 1 with no spread within a time."""
    from equivlib.twirl import Decomposition

    def dec(gen, n):
        L1 = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
        L2 = torch.rand(n, generator=gen, dtype=torch.float64) + 0.5
        L = torch.cat([L1, L2])
        Le = torch.cat([torch.zeros(n, dtype=torch.float64), L2])  # percent 0 at t1, 100 at t2, for every chain
        return Decomposition(L, L - Le, Le, "iid", "unbiased", 4)

    n = 40
    units = torch.arange(n).repeat(2)
    gen = torch.Generator().manual_seed(0)
    d = dec(gen, n)
    per_t = [d.subset(slice(0, n)).summary(), d.subset(slice(n, 2 * n)).summary()]
    assert per_t[0]["se_percent"] == 0 and per_t[1]["se_percent"] < 1e-12  # the old "bound" is 0
    pooled = d.pool(units).summary()
    assert pooled["percent"] == pytest.approx(100 * float(d.L_equiv.sum() / d.L.sum()), rel=1e-12)
    assert pooled["n_samples"] == n and pooled["L"] == pytest.approx(float(d.L.mean()), rel=1e-12)
    # the delta-method SE matches the spread of the pooled percent over independent replicates
    reps = torch.tensor([dec(gen, n).pool(units).percent for _ in range(2000)])
    assert pooled["se_percent"] > 0
    assert pooled["se_percent"] == pytest.approx(float(reps.std()), rel=0.2)
    with pytest.raises(ValueError, match="same number"):
        d.pool(torch.cat([torch.zeros(n + 1), torch.ones(n - 1)]).long())
    with pytest.raises(ValueError, match="one per sample"):
        d.pool(torch.arange(n))


def test_decompose_converts_dtypes_and_is_loud_about_nonfinite_values(generator):
    from equivlib.twirl import NonFiniteError

    x, y, m = make_atoms(B=4, generator=generator)
    model = AtomMLP()
    s = sample_haar(4, batch=4, generator=generator)
    d32 = decompose_model(model, x.float(), y.float(), s, VectorAction(), mask=m)  # float32 data, float64 model
    d64 = decompose_model(model, x.float().double(), y.float().double(), s, VectorAction(), mask=m)
    assert d32.L.dtype == F64 and torch.equal(d32.L, d64.L) and torch.equal(d32.L_equiv, d64.L_equiv)
    Z = twisted_predictions(model, x, s, VectorAction())
    Z_bad = Z.clone()
    Z_bad[1, 0, 2, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"0 of 4 samples have non-finite targets and 1 non-finite twisted "
                                             r"predictions \(samples \[2\]\)"):
        decompose(Z_bad, y, s, mask=m)
    y_bad = y.clone()
    y_bad[0, 0, 1] = float("inf")
    with pytest.raises(NonFiniteError, match="1 of 4 samples have non-finite targets"):
        decompose(Z, y_bad, s, mask=m)
    y_pad = y.clone()
    y_pad[~m] = float("nan")  # padding is ignored, even when it is NaN
    assert torch.equal(decompose(Z, y_pad, s, mask=m).L, decompose(Z, y, s, mask=m).L)
    x_bad = x.clone()
    x_bad[3, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="1 of 4 samples have non-finite inputs"):
        decompose_model(model, x_bad, y, s, VectorAction(), mask=m)
    with pytest.raises(GroupError, match="floating point"):
        decompose(Z, y.long(), s)
