"""ASNG: adaptive stochastic natural gradient on independent categorical distributions.

Re-implementation of the distribution update of ASNG-NAS (Akimoto et al., ICML 2019) as
described in ``docs/ALGORITHMS.md`` section 2. It knows nothing about networks: the caller samples
architectures (one choice index per decision), evaluates a loss for each and hands the pairs
back to :meth:`CategoricalASNG.update`.

Model
-----
Decision ``i`` has ``K_i`` choices and a categorical distribution with expectation parameters
``θ_i`` (the choice probabilities, ``Σ_j θ_ij = 1``), started uniform. ``θ`` is stored as a
padded 2-D array of shape ``(num_decisions, max K_i)``; entries ``j >= K_i`` are always 0.
``N = Σ (K_i − 1)`` is the number of free parameters, ``D`` the number of decisions with
``K_i > 1``. Decisions with ``K_i == 1`` are constant (θ_i = [1]) and never change.

Update (one call of :meth:`CategoricalASNG.update`)
---------------------------------------------------
With state ``θ``, ``s ∈ R^N`` (0), ``γ`` (0), ``Δ`` (1)::

    δ = δ_init / Δ,   β = δ / sqrt(N)
    g = mean_k u_k (onehot(x_k) − θ)                        natural gradient estimate
    v_i = g_i[:K−1]/sqrt(a) + sqrt(a)·Σ g_i[:K−1]/(θ_K + sqrt(θ_K))
                                    with a = θ_i[:K−1], θ_K = θ_i[K−1]
    ‖g‖_F = ‖concat_i v_i‖                                   Fisher norm of g
    θ ← θ + δ·g/‖g‖_F
    margin, per decision with K_i > 1, θ_min = 1/(D·(K_i − 1)):
        θ_i ← max(θ_i, θ_min)
        θ_i ← θ_i − (Σθ_i − 1)·(θ_i − θ_min)/(Σθ_i − K_i·θ_min)
        θ_i ← θ_i / Σθ_i
    s ← (1 − β)·s + sqrt(β(2 − β))·v/‖g‖_F
    γ ← (1 − β)²·γ + β(2 − β)
    Δ ← min(Δ_max, Δ·exp(β·(γ − ‖s‖²/α)))

``s`` accumulates normalised steps; ``γ`` is the squared norm ``s`` would have if the steps
were pure noise. When the signal is weak (``‖s‖² < α·γ``) ``Δ`` grows and the step ``δ``
shrinks; when successive steps agree, ``Δ`` falls and the step grows. ``Δ_max`` is honoured
(the official classification code hard-codes infinity).

Utilities (ranking)
-------------------
For λ = 2 samples: the better (lower loss) gets +1, the worse −1. For λ > 2 (a generalisation
following the official code's ranking; docs/ALGORITHMS.md fixes only λ = 2): with
``μ = ceil(λ/4)``, the μ best get +1, the μ worst −1, the rest 0. Samples with *exactly equal*
losses share the mean of the weights of the ranks they occupy, so a tie at λ = 2 gives (0, 0).
The official code uses ±1/μ; the update is invariant to the scale of the utilities (``g`` is
divided by its own norm), so ±1 gives the same result. A NaN loss counts as +inf (worst).

When the update is skipped (no state change at all)
---------------------------------------------------
* every utility is 0 (a tie at λ = 2, or all losses equal), or
* ``‖g‖_F == 0`` (e.g. all samples are the same architecture), where the step is undefined.

Margin notes
------------
The margin keeps every probability at least θ_min (so sampling never stops exploring and the
``1/sqrt(θ)`` in ``v`` stays finite). Consequences of the formula as written:

* with it, ``max_j θ_ij`` can reach at most ``1 − (K_i − 1)·θ_min = 1 − 1/D``; so
  :meth:`convergence` tends to :attr:`convergence_ceiling`, not to 1;
* with exactly two binary decisions (``D = 2``, ``K_i = 2``), ``θ_min = 1/2`` pins that
  decision to [1/2, 1/2] forever — the margin as written, reproduced faithfully;
* with ``D = 1`` the written margin is infeasible (``K·θ_min > 1``; the official code divides by
  zero). Then, and only then, ``θ_min = 1/(2·K_i)`` (half the uniform probability) is used.
  The ``theta_min`` argument overrides all of this with one value for every decision.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CategoricalASNG", "ranking_utility", "to_onehot", "from_onehot"]

_STATE_FORMAT = "compressor.search.asng/1"


def ranking_utility(losses: Any) -> np.ndarray:
    """Ranking-based utilities ``u_k`` for losses (lower is better), in the losses' order.

    ``μ = ceil(λ/4)``: the μ best get +1, the μ worst −1, the others 0; exactly equal losses
    share the mean of the weights of the ranks they occupy. λ = 2: (+1, −1), tie (0, 0).
    NaN counts as +inf. The utilities always sum to 0.
    """
    f = np.asarray(losses, dtype=float).reshape(-1)
    lam = f.shape[0]
    if lam < 2:
        raise ValueError(f"ranking needs at least 2 losses, got {lam}")
    f = np.where(np.isnan(f), np.inf, f)
    order = np.argsort(f, kind="stable")
    mu = math.ceil(lam / 4)
    base = np.zeros(lam)
    base[:mu] = 1.0
    base[lam - mu:] = -1.0
    ranked = f[order]
    w = np.empty(lam)
    start = 0
    for r in range(1, lam + 1):
        if r == lam or ranked[r] != ranked[start]:
            w[start:r] = base[start:r].mean()
            start = r
    u = np.empty(lam)
    u[order] = w
    return u


def to_onehot(indices: Any, categories: list[int]) -> np.ndarray:
    """Choice indices ``(n, d)`` (or ``(d,)``) → padded one-hot ``(n, d, max K)`` float array."""
    cats = np.asarray(categories, dtype=int)
    idx = np.asarray(indices)
    squeeze = idx.ndim == 1
    idx = np.atleast_2d(idx)
    if idx.ndim != 2 or idx.shape[1] != cats.shape[0]:
        raise ValueError(f"indices must have shape (n, {cats.shape[0]}), got {np.shape(indices)}")
    if not np.issubdtype(idx.dtype, np.integer):
        if not np.all(np.equal(np.mod(idx, 1), 0)):
            raise ValueError("choice indices must be integers")
        idx = idx.astype(int)
    if np.any(idx < 0) or np.any(idx >= cats[None, :]):
        raise ValueError("choice index out of range for its decision")
    n, d = idx.shape
    out = np.zeros((n, d, int(cats.max())))
    out[np.arange(n)[:, None], np.arange(d)[None, :], idx] = 1.0
    return out[0] if squeeze else out


def from_onehot(onehot: Any) -> np.ndarray:
    """Padded one-hot ``(n, d, max K)`` (or ``(d, max K)``) → integer choice indices."""
    return np.argmax(np.asarray(onehot), axis=-1).astype(np.int64)


def _jsonable(obj: Any) -> Any:
    """Numpy containers/scalars inside an rng state → plain Python (lists, ints, floats)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _from_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        return {k: _from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_jsonable(v) for v in obj]
    return obj


def _make_rng(rng: Any) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(None if rng is None else int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")


class CategoricalASNG:
    """Adaptive stochastic natural gradient over independent categorical decisions.

    Args:
        categories: ``K_i`` for each decision (each >= 1).
        alpha: threshold α of the step-size adaptation (1.5 in the paper).
        delta_init: δ_init; the step is ``δ = δ_init / Δ``.
        delta_max: cap Δ_max on Δ (so the step never falls below ``δ_init/Δ_max``).
        rng: ``None``, an int seed, or a ``numpy.random.Generator`` (used as is).
        theta_min: override the margin with one value for all decisions (see module notes);
            default ``1/(D·(K_i − 1))`` per decision.

    ``theta`` is a padded ``(num_decisions, max K)`` array whose row ``i`` holds ``θ_i`` in
    columns ``0..K_i−1`` and zeros after.
    """

    def __init__(
        self,
        categories: list[int],
        alpha: float = 1.5,
        delta_init: float = 1.0,
        delta_max: float = math.inf,
        rng: Any = None,
        theta_min: float | None = None,
    ) -> None:
        cats = [int(k) for k in categories]
        if len(cats) == 0:
            raise ValueError("categories must name at least one decision")
        if any(k < 1 for k in cats) or any(k != c for k, c in zip(cats, categories)):
            raise ValueError(
                f"every category count must be an integer >= 1, got {list(categories)}"
            )
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"alpha must be a positive number, got {alpha}")
        if not (delta_init > 0 and math.isfinite(delta_init)):
            raise ValueError(f"delta_init must be a positive number, got {delta_init}")
        if not (delta_max > 0) or math.isnan(delta_max):
            raise ValueError(f"delta_max must be positive (inf allowed), got {delta_max}")
        self._cats = np.asarray(cats, dtype=np.int64)
        self._kmax = int(self._cats.max())
        self._mask = np.arange(self._kmax)[None, :] < self._cats[:, None]
        self.N = int(np.sum(self._cats - 1))
        self.D = int(np.sum(self._cats > 1))
        self.alpha = float(alpha)
        self.delta_init = float(delta_init)
        self.delta_max = float(delta_max)
        self._theta_min_override = None if theta_min is None else float(theta_min)
        self._theta_min = self._resolve_theta_min(self._theta_min_override)
        self._rng = _make_rng(rng)
        self._theta = np.where(self._mask, 1.0 / self._cats[:, None], 0.0)
        self._s = np.zeros(self.N)
        self._gamma = 0.0
        self._Delta = 1.0
        self.num_updates = 0  # updates applied (skipped ones not counted)

    # ------------------------------------------------------------------ configuration
    def _resolve_theta_min(self, override: float | None) -> np.ndarray:
        tm = np.zeros(len(self._cats))
        for i, k in enumerate(self._cats):
            if k == 1:
                continue
            if override is not None:
                if not (0 < override <= 1.0 / k):
                    raise ValueError(
                        f"theta_min={override} must lie in (0, 1/K] for every decision (K={k})"
                    )
                tm[i] = override
            elif k * (1.0 / (self.D * (k - 1))) <= 1.0:
                tm[i] = 1.0 / (self.D * (k - 1))
            else:  # D == 1: the written margin is infeasible, see module notes
                tm[i] = 1.0 / (2 * k)
        return tm

    @property
    def categories(self) -> list[int]:
        """``K_i`` per decision."""
        return [int(k) for k in self._cats]

    @property
    def num_decisions(self) -> int:
        return len(self._cats)

    @property
    def theta_min(self) -> np.ndarray:
        """Margin θ_min per decision (0 for constant decisions)."""
        return self._theta_min.copy()

    # ------------------------------------------------------------------ state views
    @property
    def theta(self) -> np.ndarray:
        """Copy of θ, padded ``(num_decisions, max K)``; zeros beyond ``K_i``."""
        return self._theta.copy()

    def theta_list(self) -> list[np.ndarray]:
        """θ as a list of 1-D arrays of length ``K_i``."""
        return [self._theta[i, :k].copy() for i, k in enumerate(self._cats)]

    @property
    def step_size(self) -> float:
        """δ = δ_init / Δ, the step the next update will take."""
        return self.delta_init / self._Delta

    @property
    def Delta(self) -> float:  # noqa: N802 - the paper's name
        """Δ: the step-size divisor, adapted by the update, capped at ``delta_max``."""
        return self._Delta

    @property
    def s(self) -> np.ndarray:
        """Copy of the evolution path s ∈ R^N."""
        return self._s.copy()

    @property
    def gamma(self) -> float:
        """γ: expected ‖s‖² under pure-noise steps."""
        return self._gamma

    def argmax(self) -> np.ndarray:
        """Most probable choice per decision (ties → lowest index); the final architecture."""
        return np.argmax(np.where(self._mask, self._theta, -np.inf), axis=1).astype(np.int64)

    def convergence(self) -> float:
        """``mean_i max_j θ_ij`` (constant decisions count as 1)."""
        return float(np.mean(np.max(self._theta, axis=1)))

    @property
    def convergence_ceiling(self) -> float:
        """Largest value :meth:`convergence` can reach under the margin:
        ``mean_i (1 − (K_i − 1)·θ_min_i)``, i.e. ``1 − 1/D`` per decision with the default
        margin."""
        return float(np.mean(1.0 - (self._cats - 1) * self._theta_min))

    def has_converged(self, threshold: float) -> bool:
        """``convergence() >= threshold``. Mind :attr:`convergence_ceiling` when choosing it."""
        return self.convergence() >= threshold

    # ------------------------------------------------------------------ sampling
    def sample(self, n: int = 2) -> np.ndarray:
        """``n`` architectures as an int64 array ``(n, num_decisions)`` of choice indices."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        n = int(n)
        u = self._rng.random((n, self.num_decisions))
        cdf = np.cumsum(self._theta, axis=1)  # padded entries repeat the total
        # choice = how many valid cumulative probabilities are <= u (inverse-CDF sampling)
        count = np.sum((cdf[None, :, :] <= u[:, :, None]) & self._mask[None, :, :], axis=2)
        return np.minimum(count, self._cats[None, :] - 1).astype(np.int64)

    def to_onehot(self, indices: Any) -> np.ndarray:
        """Choice indices → padded one-hot ``(n, d, max K)``."""
        return to_onehot(indices, self.categories)

    # ------------------------------------------------------------------ update
    def _as_onehot(self, samples: Any) -> np.ndarray:
        arr = np.asarray(samples)
        if arr.ndim == 2:
            return to_onehot(arr, self.categories)
        if arr.ndim == 3:
            if arr.shape[1:] != (self.num_decisions, self._kmax):
                raise ValueError(
                    f"one-hot samples must have shape (n, {self.num_decisions}, {self._kmax}), "
                    f"got {arr.shape}"
                )
            return to_onehot(from_onehot(arr), self.categories)
        raise ValueError("samples must be choice indices (n, d) or one-hot (n, d, max K)")

    def update(self, samples: Any, losses: Any) -> bool:
        """One ASNG step from ``samples`` (indices ``(λ, d)`` or one-hot) and their losses.

        Returns True if the state changed, False if the update was skipped (all utilities 0,
        e.g. a tie at λ = 2, or a zero natural gradient); a skip changes nothing.
        """
        onehot = self._as_onehot(samples)
        f = np.asarray(losses, dtype=float).reshape(-1)
        if f.shape[0] != onehot.shape[0]:
            raise ValueError(f"{onehot.shape[0]} samples but {f.shape[0]} losses")
        u = ranking_utility(f)
        if not np.any(u != 0) or self.N == 0:
            return False

        delta = self.delta_init / self._Delta
        beta = delta / math.sqrt(self.N)

        # natural gradient estimate; padded columns stay 0 because onehot and θ are 0 there
        g = np.mean(u[:, None, None] * (onehot - self._theta[None, :, :]), axis=0)

        v_parts = []
        for i, k in enumerate(self._cats):
            if k == 1:
                continue
            a = self._theta[i, : k - 1]
            tk = self._theta[i, k - 1]
            gi = g[i, : k - 1]
            v_parts.append(gi / np.sqrt(a) + np.sqrt(a) * gi.sum() / (tk + math.sqrt(tk)))
        v = np.concatenate(v_parts)
        gnorm = float(np.sqrt(np.dot(v, v)))
        if not (gnorm > 0) or not math.isfinite(gnorm):
            return False

        theta = self._theta + delta * g / gnorm
        for i, k in enumerate(self._cats):
            if k == 1:
                continue
            tmin = self._theta_min[i]
            row = np.maximum(theta[i, :k], tmin)
            total = row.sum()
            denom = total - k * tmin
            if denom > 0:
                row = row - (total - 1.0) * (row - tmin) / denom
            row = row / row.sum()
            theta[i, :k] = row
        self._theta = theta

        self._s = (1.0 - beta) * self._s + math.sqrt(beta * (2.0 - beta)) * v / gnorm
        self._gamma = (1.0 - beta) ** 2 * self._gamma + beta * (2.0 - beta)
        s_sq = float(np.dot(self._s, self._s))
        self._Delta = min(
            self.delta_max, self._Delta * math.exp(beta * (self._gamma - s_sq / self.alpha))
        )
        self.num_updates += 1
        return True

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume identically, as plain JSON-able data.

        Floats round-trip exactly through ``json``; ``delta_max = inf`` is stored as None.
        """
        return {
            "format": _STATE_FORMAT,
            "categories": self.categories,
            "alpha": self.alpha,
            "delta_init": self.delta_init,
            "delta_max": None if math.isinf(self.delta_max) else self.delta_max,
            "theta_min_override": self._theta_min_override,
            "theta": [[float(x) for x in self._theta[i, :k]] for i, k in enumerate(self._cats)],
            "s": [float(x) for x in self._s],
            "gamma": float(self._gamma),
            "Delta": float(self._Delta),
            "num_updates": int(self.num_updates),
            "rng": _jsonable(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (categories must match); the rng state is restored
        into this object's generator (same bit-generator type required)."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not an ASNG state (format {state.get('format')!r})")
        if [int(k) for k in state["categories"]] != self.categories:
            raise ValueError(
                f"state is for categories {state['categories']}, this search has {self.categories}"
            )
        theta_rows = state["theta"]
        if len(theta_rows) != self.num_decisions or any(
            len(r) != k for r, k in zip(theta_rows, self.categories)
        ):
            raise ValueError("theta in state does not match the categories")
        theta = np.zeros((self.num_decisions, self._kmax))
        for i, r in enumerate(theta_rows):
            theta[i, : len(r)] = np.asarray(r, dtype=float)
        s = np.asarray(state["s"], dtype=float)
        if s.shape != (self.N,):
            raise ValueError(f"s in state has length {s.shape[0]}, expected {self.N}")
        delta_max = math.inf if state["delta_max"] is None else float(state["delta_max"])
        override = state.get("theta_min_override")
        rng_state = _from_jsonable(state["rng"])
        if rng_state.get("bit_generator") != type(self._rng.bit_generator).__name__:
            # fresh generator of the saved kind (only happens when the caller passed its own)
            self._rng = np.random.Generator(getattr(np.random, rng_state["bit_generator"])())
        self._rng.bit_generator.state = rng_state
        self.alpha = float(state["alpha"])
        self.delta_init = float(state["delta_init"])
        self.delta_max = delta_max
        self._theta_min_override = None if override is None else float(override)
        self._theta_min = self._resolve_theta_min(self._theta_min_override)
        self._theta = theta
        self._s = s
        self._gamma = float(state["gamma"])
        self._Delta = float(state["Delta"])
        self.num_updates = int(state.get("num_updates", 0))

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CategoricalASNG:
        """A new search resumed from :meth:`state_dict` output."""
        obj = cls(list(state["categories"]))
        obj.load_state_dict(state)
        return obj

    def __repr__(self) -> str:
        return (
            f"CategoricalASNG(categories={self.categories}, step_size={self.step_size:.4g}, "
            f"convergence={self.convergence():.4f})"
        )
