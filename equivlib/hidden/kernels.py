"""Gaussian kernels and exact population losses of two-layer networks.

For ``x ~ N(0, I_d)`` and ``sigma`` one of ReLU (the degree-1 arc-cosine kernel of
Cho & Saul) or ``erf(z / sqrt 2)`` (the arcsine kernel),
``K(A, B)_ij = E[sigma(a_i . x) sigma(b_j . x)]`` is known in closed form, and so
is the population loss ``E ||V sigma(W x) - V* sigma(W* x)||^2`` of a student
``(W, V)`` against a teacher ``(W*, V*)``.  Everything is batched over leading
dimensions (a whole grid of students is one call) and has finite gradients
where two weight vectors are parallel or antiparallel, which happens exactly at
the teacher.  Monte Carlo estimates are the independent check.

This is the setting of Xie & Smidt, *A Tale of Two Symmetries* (NeurIPS 2025);
see :mod:`equivlib.hidden` for the rest of it.
"""
from __future__ import annotations

import math

import torch

from .reps import PermRep, pair_orbit_representatives

__all__ = [
    "ACTIVATIONS",
    "arccos_kernel_j",
    "relu_kernel",
    "erf_kernel",
    "gaussian_kernel",
    "monte_carlo_kernel",
    "population_loss",
    "equivariant_population_loss",
    "monte_carlo_loss",
]

ACTIVATIONS = ("relu", "erf")

# 1 - c^2 is clamped from below by this number in the second derivative of the
# arc-cosine kernel (angles below ~1e-6 rad); see ``_JPrime``.
_ONE_MINUS_C2_MIN = 1e-12


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    return activation


# ---------------------------------------------------------------------------
# The arc-cosine kernel's angular part, with hand-written derivatives
# ---------------------------------------------------------------------------
def _elementwise_function(name: str, value, derivative) -> type[torch.autograd.Function]:
    """An autograd function ``c -> value(c)`` (elementwise) whose derivative is ``derivative(c)``.

    The derivative is used for both reverse mode (``backward``) and forward mode
    (``jvp``); it is itself differentiable when it is built from autograd
    operations, which gives second derivatives (Hessians).
    """

    class _Function(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(c):
            return value(c)

        @staticmethod
        def setup_context(ctx, inputs, output):
            (c,) = inputs
            ctx.save_for_backward(c)
            ctx.save_for_forward(c)

        @staticmethod
        def backward(ctx, grad):
            (c,) = ctx.saved_tensors
            return grad * derivative(c)

        @staticmethod
        def jvp(ctx, tangent):
            (c,) = ctx.saved_tensors
            return tangent * derivative(c)

    _Function.__name__ = _Function.__qualname__ = name
    return _Function


def _j(c: torch.Tensor) -> torch.Tensor:
    c = c.clamp(-1.0, 1.0)
    return torch.sqrt(1.0 - c * c) + (math.pi - torch.arccos(c)) * c


def _j_prime(c: torch.Tensor) -> torch.Tensor:
    return math.pi - torch.arccos(c.clamp(-1.0, 1.0))


def _j_second(c: torch.Tensor) -> torch.Tensor:
    return torch.rsqrt((1.0 - c.clamp(-1.0, 1.0) ** 2).clamp_min(_ONE_MINUS_C2_MIN))


# J'(c) = pi - arccos(c) with the bounded derivative 1/sqrt(1-c^2) (capped at 1e6).
_JPrime = _elementwise_function("_JPrime", _j_prime, _j_second)
# J(c) = sqrt(1-c^2) + (pi - arccos c) c with the derivative J'(c), itself differentiable.
_J = _elementwise_function("_J", _j, lambda c: _JPrime.apply(c))


def arccos_kernel_j(c: torch.Tensor) -> torch.Tensor:
    """Angular part of the degree-1 arc-cosine kernel.

    ``J(c) = sin(theta) + (pi - theta) cos(theta)`` with ``c = cos(theta)``.
    Its derivative ``J'(c) = pi - arccos(c)`` is finite on ``[-1, 1]``; autograd
    through ``sqrt`` and ``arccos`` would return NaN at ``c = +-1`` (parallel or
    antiparallel weights), so the derivative is written by hand.  The second
    derivative ``1/sqrt(1-c^2)`` diverges at ``c = +-1``; it is capped at
    ``1e6`` (``1-c^2 >= 1e-12``).  At an exactly parallel pair the gradient of
    ``c`` vanishes, so the Hessian there is still exact.

    Parameters
    ----------
    c : torch.Tensor, shape ``(...)``
        Cosines; values are clamped to ``[-1, 1]``.

    Returns
    -------
    torch.Tensor, shape ``(...)``
    """
    return _J.apply(c)


def _check_pair(A: torch.Tensor, B: torch.Tensor) -> None:
    if A.dim() < 2 or B.dim() < 2:
        raise ValueError(
            f"weight matrices need shape (..., rows, d); got {tuple(A.shape)} and {tuple(B.shape)}"
        )
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(
            f"input dimension mismatch: {tuple(A.shape)} vs {tuple(B.shape)} (last axes differ)"
        )


def _safe_norm(A: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((A * A).sum(-1).clamp_min(torch.finfo(A.dtype).tiny))


def relu_kernel(A: torch.Tensor, B: torch.Tensor, *, same: bool = False) -> torch.Tensor:
    """``K_ij = E[relu(a_i . x) relu(b_j . x)]`` for ``x ~ N(0, I)`` (Cho & Saul).

    ``K_ij = |a_i| |b_j| J(cos theta_ij) / (2 pi)`` with ``J`` from
    :func:`arccos_kernel_j`.

    Parameters
    ----------
    A : torch.Tensor, shape ``(..., h, d)``
    B : torch.Tensor, shape ``(..., k, d)``
        Leading dimensions broadcast.
    same : bool
        ``True`` when ``B is A``: the diagonal is then set to its exact value
        ``|a_i|^2 / 2`` (the angle is identically zero there).

    Returns
    -------
    torch.Tensor, shape ``(..., h, k)``
    """
    _check_pair(A, B)
    na, nb = _safe_norm(A), _safe_norm(B)
    dot = A @ B.transpose(-1, -2)
    scale = na[..., :, None] * nb[..., None, :]
    K = scale * arccos_kernel_j(dot / scale) / (2 * math.pi)
    if same:
        eye = torch.eye(A.shape[-2], dtype=A.dtype, device=A.device)
        K = K * (1 - eye) + torch.diag_embed((A * A).sum(-1) / 2)
    return K


def erf_kernel(A: torch.Tensor, B: torch.Tensor, *, same: bool = False) -> torch.Tensor:
    """``K_ij = E[g(a_i . x) g(b_j . x)]`` with ``g(z) = erf(z / sqrt 2)``, ``x ~ N(0, I)``.

    ``K_ij = (2/pi) arcsin(a_i . b_j / sqrt((1 + |a_i|^2)(1 + |b_j|^2)))``; the
    argument stays strictly inside ``(-1, 1)`` so the kernel is smooth.

    Parameters
    ----------
    A : torch.Tensor, shape ``(..., h, d)``
    B : torch.Tensor, shape ``(..., k, d)``
    same : bool
        Accepted for symmetry with :func:`relu_kernel`; has no effect.

    Returns
    -------
    torch.Tensor, shape ``(..., h, k)``
    """
    _check_pair(A, B)
    qa = 1 + (A * A).sum(-1)
    qb = 1 + (B * B).sum(-1)
    arg = (A @ B.transpose(-1, -2)) / torch.sqrt(qa[..., :, None] * qb[..., None, :])
    return (2 / math.pi) * torch.arcsin(arg)


def gaussian_kernel(A, B, activation: str = "relu", *, same: bool = False) -> torch.Tensor:
    """Dispatch to :func:`relu_kernel` or :func:`erf_kernel`; shapes as there."""
    _check_activation(activation)
    return (relu_kernel if activation == "relu" else erf_kernel)(A, B, same=same)


def _sigma(z: torch.Tensor, activation: str) -> torch.Tensor:
    _check_activation(activation)
    return torch.relu(z) if activation == "relu" else torch.erf(z / math.sqrt(2))


def monte_carlo_kernel(A, B, activation: str, n_samples: int, generator: torch.Generator,
                       chunk: int = 200_000):
    """Monte Carlo estimate of :func:`gaussian_kernel` and its standard error.

    Parameters
    ----------
    A : torch.Tensor, shape ``(h, d)``
    B : torch.Tensor, shape ``(k, d)``
    activation : {"relu", "erf"}
    n_samples : int
    generator : torch.Generator

    Returns
    -------
    mean, stderr : torch.Tensor, shape ``(h, k)`` each
    """
    _check_pair(A, B)
    s1 = torch.zeros(A.shape[-2], B.shape[-2], dtype=A.dtype)
    s2 = torch.zeros_like(s1)
    done = 0
    while done < n_samples:
        m = min(chunk, n_samples - done)
        x = torch.randn(m, A.shape[-1], generator=generator, dtype=A.dtype)
        p = _sigma(x @ A.T, activation)[:, :, None] * _sigma(x @ B.T, activation)[:, None, :]
        s1 += p.sum(0)
        s2 += (p * p).sum(0)
        done += m
    mean = s1 / n_samples
    var = (s2 / n_samples - mean**2) * n_samples / (n_samples - 1)
    return mean, torch.sqrt(var.clamp_min(0) / n_samples)


def _check_net(W, V, name="student"):
    if W.dim() < 2:
        raise ValueError(f"{name} W must have shape (..., h, d), got {tuple(W.shape)}")
    if V.dim() < 2:
        raise ValueError(f"{name} V must have shape (..., o, h), got {tuple(V.shape)}")
    if V.shape[-1] != W.shape[-2]:
        raise ValueError(
            f"{name}: V has {V.shape[-1]} hidden columns but W has {W.shape[-2]} hidden rows"
        )


def population_loss(W, V, W_teacher, V_teacher, activation: str = "relu",
                    teacher_term: torch.Tensor | None = None) -> torch.Tensor:
    """Exact Gaussian population loss ``E ||V s(W x) - V* s(W* x)||^2``.

    ``= tr(V K(W,W) V^T) - 2 tr(V K(W,W*) V*^T) + tr(V* K(W*,W*) V*^T)``.

    Parameters
    ----------
    W : torch.Tensor, shape ``(..., h, d)``
        Student first-layer weights; leading dimensions are a batch (a grid).
    V : torch.Tensor, shape ``(o, h)`` or ``(..., o, h)``
        Student output weights.
    W_teacher : torch.Tensor, shape ``(h*, d)`` (or batched)
    V_teacher : torch.Tensor, shape ``(o, h*)`` (or batched)
    activation : {"relu", "erf"}
    teacher_term : torch.Tensor, optional
        Precomputed ``tr(V* K(W*,W*) V*^T)``.

    Returns
    -------
    torch.Tensor, shape ``(...)``
    """
    _check_activation(activation)
    _check_net(W, V)
    _check_net(W_teacher, V_teacher, "teacher")
    if W.shape[-1] != W_teacher.shape[-1]:
        raise ValueError(
            f"student input dimension {W.shape[-1]} != teacher input dimension {W_teacher.shape[-1]}"
        )
    if V.shape[-2] != V_teacher.shape[-2]:
        raise ValueError(f"student has {V.shape[-2]} outputs, teacher {V_teacher.shape[-2]}")
    Kss = gaussian_kernel(W, W, activation, same=True)
    Kst = gaussian_kernel(W, W_teacher, activation)
    ss = torch.einsum("...oh,...hk,...ok->...", V, Kss, V)
    st = torch.einsum("...oh,...hk,...ok->...", V, Kst, V_teacher)
    if teacher_term is None:
        Ktt = gaussian_kernel(W_teacher, W_teacher, activation, same=True)
        teacher_term = torch.einsum("...oh,...hk,...ok->...", V_teacher, Ktt, V_teacher)
    return ss - 2 * st + teacher_term


def equivariant_population_loss(W, V, W_teacher, rep_hidden: PermRep, activation: str = "relu",
                                teacher_term: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`population_loss` for equivariant student and teacher sharing ``V``.

    If ``W``, ``W*`` are equivariant and the output weights ``V`` (shared by
    student and teacher) are invariant along hidden orbits, the kernel matrices
    are constant on the orbits of ``S_n`` acting on pairs of hidden neurons, so
    it suffices to evaluate one representative pair per orbit and weight it by
    the orbit size.

    Parameters
    ----------
    W : torch.Tensor, shape ``(..., h, d)``, equivariant
    V : torch.Tensor, shape ``(o, h)``, equivariant into trivial outputs
    W_teacher : torch.Tensor, shape ``(h, d)``
    rep_hidden : PermRep of dimension ``h``

    Returns
    -------
    torch.Tensor, shape ``(...)``
    """
    _check_activation(activation)
    _check_net(W, V)
    if W.shape[-2] != rep_hidden.dim:
        raise ValueError(f"W has {W.shape[-2]} hidden rows, representation has dimension {rep_hidden.dim}")
    I, J, cnt = pair_orbit_representatives(rep_hidden)
    h = rep_hidden.dim
    I, J, cnt = I.to(W.device), J.to(W.device), cnt.to(W.dtype).to(W.device)
    flat = I * h + J
    diag = torch.arange(h, device=W.device) * (h + 1)
    wv = (V[..., :, I] * V[..., :, J]).sum(-2) * cnt  # (R,)
    Gss = (W @ W.transpose(-1, -2)).flatten(-2)  # (..., h*h)
    Gst = (W @ W_teacher.transpose(-1, -2)).flatten(-2)
    Gtt = (W_teacher @ W_teacher.transpose(-1, -2)).flatten(-2)
    n2s, n2t = Gss[..., diag], Gtt[..., diag]
    ss = _kernel_from_dots(Gss[..., flat], n2s[..., I], n2s[..., J], activation, same=(I == J))
    st = _kernel_from_dots(Gst[..., flat], n2s[..., I], n2t[..., J], activation)
    if teacher_term is None:
        tt = _kernel_from_dots(Gtt[..., flat], n2t[..., I], n2t[..., J], activation, same=(I == J))
        teacher_term = (tt * wv).sum(-1)
    return ((ss - 2 * st) * wv).sum(-1) + teacher_term


def _kernel_from_dots(dot, n2a, n2b, activation, same=None):
    """Kernel from dot products and squared norms (all of shape ``(..., R)``)."""
    if activation == "relu":
        tiny = torch.finfo(dot.dtype).tiny
        scale = torch.sqrt(n2a.clamp_min(tiny) * n2b.clamp_min(tiny))
        K = scale * arccos_kernel_j(dot / scale) / (2 * math.pi)
        if same is not None and bool(same.any()):
            K = torch.where(same, n2a / 2, K)
        return K
    return (2 / math.pi) * torch.arcsin(dot / torch.sqrt((1 + n2a) * (1 + n2b)))


def monte_carlo_loss(W, V, W_teacher, V_teacher, activation: str, n_samples: int,
                     generator: torch.Generator):
    """Monte Carlo estimate of :func:`population_loss` for one network.

    Parameters
    ----------
    W : (h, d), V : (o, h), W_teacher : (h*, d), V_teacher : (o, h*)

    Returns
    -------
    mean, stderr : float
    """
    _check_net(W, V)
    x = torch.randn(n_samples, W.shape[-1], generator=generator, dtype=W.dtype)
    r = _sigma(x @ W.T, activation) @ V.T - _sigma(x @ W_teacher.T, activation) @ V_teacher.T
    e = (r * r).sum(-1)
    return e.mean().item(), (e.std() / math.sqrt(n_samples)).item()
