"""Adversarial attacks on a classifier's inputs, batched, inside explicit constraints.

Every attack takes ``(model, x, y, eps)`` with ``eps`` a number or one radius per row and
returns adversarial inputs that lie in the ε-ball of their row (``"linf"`` or ``"l2"``) and
satisfy the :class:`Constraints`: the valid input range, features that must not change, and
whole-number features. The model is only ever asked for outputs and input gradients
(``torch.autograd.grad`` w.r.t. the inputs), so no gradient is left on its weights.

- :func:`fgsm`: one signed-gradient step (Goodfellow et al. 2015).
- :func:`pgd`: projected gradient descent (Madry et al. 2018) with random start, a cosine
  (with warm restarts: more steps never weaken it) or constant step-size schedule and restarts; a row counts as broken as soon as any iterate
  misclassifies it, and that iterate is returned.
- :func:`apgd`: Auto-PGD (Croce & Hein 2020): momentum and a per-row step size that halves
  where the loss stalls, on the cross-entropy (APGD-CE) or the targeted DLR loss against the
  most likely wrong classes in turn (APGD-T), as in AutoAttack.
- :func:`square`: the score-based Square attack (Andriushchenko et al. 2020, L∞): random
  square patches (or random feature subsets on tables) at ±ε, kept when the margin falls.
  It needs no gradient, so gradient masking cannot hide a weakness from it.
- :func:`random_noise`: Gaussian or uniform noise scaled to the ε-sphere, the baseline any
  real attack must beat.

:func:`run_attack` runs any of them by its name in :mod:`.registry`.

Tables are attacked in the model's encoded space (standardised numeric columns): ε is in
training standard deviations, and only mutable numeric columns move (see
:func:`tabular_constraints`).
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scrutiny.audit.robustness.registry import ATTACK_INFO, ATTACKS, DEFAULT_QUERIES, DEFAULT_STEPS, NORMS
from scrutiny.errors import InputError

__all__ = ["NORMS", "Constraints", "image_constraints", "tabular_constraints", "fgsm", "pgd", "apgd", "square",
           "random_noise", "run_attack", "perturbation_norm", "AttackStats", "pgd_step_sizes", "apgd_checkpoints"]


@dataclass
class Constraints:
    """What an attack may change, over the flat model input.

    Args:
        lower, upper: valid range of each input position (flat). A row whose own value lies
            outside it keeps that value as the bound on that side.
        mutable: which positions may change.
        integer: positions whose original-unit value ``x * scale + offset`` must stay a whole number.
        scale, offset: the affine map from model units to original units of ``integer`` positions.
        applied: one sentence per rule, for reports.
    """

    lower: np.ndarray
    upper: np.ndarray
    mutable: np.ndarray
    integer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    applied: tuple[str, ...] = ()

    def tensors(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        shape = like.shape[1:]
        as_tensor = lambda a: torch.as_tensor(np.asarray(a).reshape(shape), dtype=like.dtype, device=like.device)  # noqa: E731
        return as_tensor(self.lower), as_tensor(self.upper), as_tensor(self.mutable.astype(np.float32))

    def n_mutable(self) -> int:
        return int(self.mutable.sum())


def image_constraints(input_shape: tuple[int, ...], pixel_range: tuple[float, float]) -> Constraints:
    size = int(np.prod(input_shape))
    low, high = pixel_range
    return Constraints(
        lower=np.full(size, low), upper=np.full(size, high), mutable=np.ones(size, dtype=bool),
        applied=(f"pixels stay in the valid range [{low:g}, {high:g}]",),
    )


def tabular_constraints(preprocessor, X_train_encoded: np.ndarray, *, immutable=(), mutable=(),
                        spec=None) -> Constraints:
    """The rules a tabular attack keeps.

    Numeric features move within the range seen in training; whole-number features (``Feature.integer``)
    stay whole; categorical and binary features are held (a change of category is not a small
    perturbation, and one-hot blocks therefore stay one-hot); protected attributes and the
    spec's ``immutable`` columns are held unless named in ``mutable``; ``immutable`` holds more features.

    Args:
        spec: the data set whose protected attributes and ``immutable`` columns are held.
            Default: the preprocessor's (a checkpoint's preprocessor carries the spec it was
            trained with, which may predate ``immutable``).
    """
    model_spec = preprocessor.spec  # the columns the model reads
    _check_named_features(model_spec, immutable=immutable, mutable=mutable)
    held = _held_features(spec if spec is not None else model_spec, model_spec.feature_names,
                          immutable=immutable, mutable=mutable)
    lower, upper = X_train_encoded.min(axis=0).astype(np.float64), X_train_encoded.max(axis=0).astype(np.float64)
    movable, integer, scale, offset = _movable_columns(preprocessor, held)
    applied = _applied_rules(model_spec, held, whole=bool(integer))
    if not movable.any():
        raise InputError(f"{model_spec.name}: no numeric feature is left mutable (protected attributes and immutable "
                         "columns are held); nothing to perturb or put noise on")
    return Constraints(lower=lower, upper=upper, mutable=movable, integer=np.asarray(integer, dtype=np.int64),
                       scale=np.asarray(scale), offset=np.asarray(offset), applied=tuple(applied))


def _check_named_features(spec, *, immutable, mutable) -> None:
    names = spec.feature_names
    for option, given in (("immutable", immutable), ("mutable", mutable)):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise InputError(f"{option}: no feature named {', '.join(map(repr, unknown))} in {spec.name} "
                             f"(features: {', '.join(names)})")


def _held_features(spec, names: list[str], *, immutable, mutable) -> set[str]:
    """The features an attack must not change: by default the protected attributes and the
    spec's immutable columns, less ``mutable``, plus ``immutable``."""
    protected = {p.name for p in spec.protected}
    held_default = {n for n in names if n in protected or n in spec.immutable}
    return (held_default - set(mutable)) | set(immutable)


def _movable_columns(preprocessor, held: set[str]):
    """Which encoded columns may move (the numeric features not held), and the positions,
    scales and offsets of the whole-number ones among them."""
    groups = preprocessor.feature_groups
    movable = np.zeros(preprocessor.n_encoded, dtype=bool)
    integer, scale, offset = [], [], []
    for feature in preprocessor.spec.features:
        if feature.kind != "numeric" or feature.name in held:
            continue
        (column,) = groups[feature.name]
        movable[column] = True
        if feature.integer:
            integer.append(column)
            scale.append(preprocessor.scales_[feature.name])
            offset.append(preprocessor.means_[feature.name])
    return movable, integer, scale, offset


def _applied_rules(spec, held: set[str], *, whole: bool) -> list[str]:
    """One sentence per rule, for reports."""
    categorical = [f.name for f in spec.features if f.kind != "numeric"]
    applied = ["numeric features stay within the range seen in training (or the row's own value)",
               "eps is in training standard deviations of each numeric feature"]
    if whole:
        applied.append("whole-number features stay whole: " + ", ".join(
            f.name for f in spec.features if f.kind == "numeric" and f.integer and f.name not in held))
    if categorical:
        applied.append("categorical and binary features are held, so one-hot groups stay one-hot: " + ", ".join(categorical))
    if held:
        applied.append("immutable: " + ", ".join(n for n in spec.feature_names if n in held))
    return applied


@dataclass
class AttackStats:
    """Diagnostics an attack gathers on the way (for the weak-evaluation checks), as counts, so
    that the statistics of attacks run on separate chunks of rows add up exactly (``a + b``).

    Example:
        >>> total = AttackStats(gradient_rows=4, zero_rows=1) + AttackStats(gradient_rows=4, model_rows=8)
        >>> total.zero_gradient, total.model_rows
        (0.125, 8)
    """

    gradient_rows: int = 0   # rows whose first input gradient was checked (under these statistics)
    zero_rows: int = 0       # ... of which the gradient is all zero
    nonfinite_rows: int = 0  # ... of which the gradient has NaN/inf
    model_rows: int = 0      # rows sent through the model
    checkpoint_rows: int = 0  # rows an APGD run left unbroken at its last checkpoint
    improving_rows: int = 0   # ... of which the best loss still rose since the checkpoint before

    @property
    def zero_gradient(self) -> float:
        """Share of the checked rows whose first input gradient is all zero (NaN when none was checked)."""
        return self.zero_rows / self.gradient_rows if self.gradient_rows else float("nan")

    @property
    def nonfinite_gradient(self) -> float:
        """Share of the checked rows whose first input gradient has NaN/inf (NaN when none was checked)."""
        return self.nonfinite_rows / self.gradient_rows if self.gradient_rows else float("nan")

    @property
    def still_improving(self) -> float:
        """Share of the rows APGD left unbroken at its last checkpoint whose best loss still rose
        (by more than float creep) since the checkpoint before: a sign more steps might break
        more (NaN when none)."""
        return self.improving_rows / self.checkpoint_rows if self.checkpoint_rows else float("nan")

    def __add__(self, other: AttackStats) -> AttackStats:
        return AttackStats(*(a + b for a, b in zip(astuple(self), astuple(other))))


# ------------------------------------------------------------------ projection


def _radius(eps, x: Tensor) -> Tensor:
    eps = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    if eps.ndim == 0:
        eps = eps.expand(len(x))
    if eps.shape != (len(x),):
        raise InputError(f"eps must be one number or one per row ({len(x)}); got shape {tuple(eps.shape)}")
    if (eps < 0).any() or not torch.isfinite(eps).all():
        raise InputError(f"eps must be finite and non-negative in {x.dtype} (at most {torch.finfo(x.dtype).max:.4g}); "
                         f"got {eps.min().item():g} to {eps.max().item():g}")
    return eps.view(-1, *([1] * (x.ndim - 1)))


def _flat_norm(delta: Tensor, norm: str) -> Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def perturbation_norm(x_adv: np.ndarray | Tensor, x: np.ndarray | Tensor, norm: str) -> np.ndarray:
    """Per-row size of ``x_adv − x`` in ``norm``."""
    delta = torch.as_tensor(np.asarray(x_adv, dtype=np.float64) - np.asarray(x, dtype=np.float64))
    return _flat_norm(delta, norm).numpy()


class _Projector:
    """Projects candidates onto {ball of x} ∩ {valid range} ∩ {mutable positions}."""

    def __init__(self, x: Tensor, eps: Tensor, norm: str, constraints: Constraints):
        lower, upper, self.mutable = constraints.tensors(x)
        self.x, self.eps, self.norm = x, eps, norm
        self.lower, self.upper = torch.minimum(lower, x), torch.maximum(upper, x)
        self.constraints = constraints
        self._whole: tuple[Tensor, Tensor, Tensor] | None = None  # whole-number columns, their scale and offset
        if norm == "linf":  # ball ∩ range ∩ mutable is one box; immutable positions get lo = hi = x
            reach = eps * self.mutable
            self.box = torch.maximum(x - reach, self.lower), torch.minimum(x + reach, self.upper)

    def __call__(self, x_adv: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.clamp(x_adv, *self.box)
        delta = (x_adv - self.x) * self.mutable
        length = _flat_norm(delta, "l2").view(self.eps.shape)
        delta = delta * torch.clamp(self.eps / length.clamp_min(1e-12), max=1.0)
        # clipping to a box that holds x only ever moves a coordinate towards x: the ball still holds
        return torch.clamp(self.x + delta, self.lower, self.upper)

    def finalise(self, x_adv: Tensor) -> Tensor:
        """Whole-number positions rounded towards the row's own value, which keeps the ball and the box."""
        c = self.constraints
        if not len(c.integer):
            return x_adv
        if self._whole is None:
            self._whole = (torch.as_tensor(c.integer, device=x_adv.device),
                           torch.as_tensor(c.scale, dtype=torch.float64, device=x_adv.device),
                           torch.as_tensor(c.offset, dtype=torch.float64, device=x_adv.device))
        idx, scale, offset = self._whole
        flat, flat_x = x_adv.flatten(1).clone(), self.x.flatten(1)
        value = flat[:, idx].double() * scale + offset
        original = flat_x[:, idx].double() * scale + offset
        rounded = torch.where(value > original, torch.floor(value + 1e-6), torch.ceil(value - 1e-6))
        rounded = torch.where(torch.isclose(value, original, atol=1e-6), original, rounded)
        flat[:, idx] = ((rounded - offset) / scale).to(flat.dtype)
        return flat.view_as(x_adv)

    def random_start(self, generator: torch.Generator) -> Tensor:
        noise = torch.empty_like(self.x)
        if self.norm == "linf":
            noise.uniform_(-1, 1, generator=generator)
            return self(self.x + noise * self.eps)
        noise.normal_(generator=generator)
        noise = noise * self.mutable
        length = _flat_norm(noise, "l2").view(self.eps.shape).clamp_min(1e-12)
        radius = torch.rand(self.eps.shape, generator=generator, device=self.x.device, dtype=self.x.dtype)
        return self(self.x + noise / length * self.eps * radius)


def _check(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> None:
    if norm not in NORMS:
        raise InputError(f"norm '{norm}' is not supported; expected one of {', '.join(NORMS)}")
    if len(x) != len(y):
        raise InputError(f"x has {len(x)} rows but y has {len(y)}")
    model.eval()


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def _loss_and_grad(model: nn.Module, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x_adv)
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
    return logits.detach(), grad


def _step(grad: Tensor, norm: str, mutable: Tensor) -> Tensor:
    """The steepest-ascent direction of unit ``norm``."""
    grad = grad * mutable
    if norm == "linf":
        return grad.sign()
    length = _flat_norm(grad, "l2").view(-1, *([1] * (grad.ndim - 1)))
    return grad / length.clamp_min(1e-12)


def _gradient_health(grad: Tensor, stats: AttackStats | None) -> None:
    """Counts the rows of the first gradient these statistics see."""
    if stats is None or stats.gradient_rows:
        return
    flat = grad.flatten(1)
    finite = torch.isfinite(flat).all(dim=1)
    stats.gradient_rows = len(flat)
    stats.nonfinite_rows = int((~finite).sum())
    stats.zero_rows = int(((flat == 0).all(dim=1) & finite).sum())


# ------------------------------------------------------------------ attacks


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps, *, norm: str = "linf", constraints: Constraints,
         stats: AttackStats | None = None) -> Tensor:
    """One step of size ε along the gradient's sign (L∞) or direction (L2)."""
    _check(model, x, y, norm)
    radius = _radius(eps, x)
    project = _Projector(x, radius, norm, constraints)
    _, grad = _loss_and_grad(model, x, y)
    _gradient_health(grad, stats)
    if stats is not None:
        stats.model_rows += len(x)
    return project.finalise(project(x + radius * _step(grad, norm, project.mutable))).detach()


PGD_CYCLE = 10
"""Steps in the first cycle of PGD's cosine schedule; each later cycle is twice as long."""


def pgd_step_sizes(steps: int, first: float, schedule: str = "cosine") -> list[float]:
    """PGD's step sizes, as multiples of ε.

    ``"cosine"``: cosine annealing with warm restarts (Loshchilov & Hutter 2017) over cycles of
    :data:`PGD_CYCLE`, then twice, four times… as many steps, each from ``first`` down towards 0.
    No size depends on ``steps``, so the schedule of fewer steps is the start of the schedule
    of more: with the same seed a longer run passes through every iterate of a shorter one,
    and since a row counts as broken at any misclassified iterate, more steps never weaken PGD.
    ``"constant"``: ``first`` at every step.

    Example:
        >>> [round(s, 3) for s in pgd_step_sizes(12, 0.5)]
        [0.5, 0.488, 0.452, 0.397, 0.327, 0.25, 0.173, 0.103, 0.048, 0.012, 0.5, 0.497]
    """
    if schedule == "constant":
        return [first] * steps
    sizes: list[float] = []
    length = PGD_CYCLE
    while len(sizes) < steps:
        sizes += [first * 0.5 * (1 + math.cos(math.pi * t / length)) for t in range(length)]
        length *= 2
    return sizes[:steps]


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps, *, norm: str = "linf", constraints: Constraints,
        steps: int = DEFAULT_STEPS, step_size: float | None = None, schedule: str = "cosine", restarts: int = 1,
        random_start: bool = True, seed: int = 0, stats: AttackStats | None = None) -> Tensor:
    """Projected gradient ascent on the cross-entropy.

    Args:
        step_size: first step (of each cosine cycle) as a multiple of ε. Default: 0.5 for the
            cosine schedule (:func:`pgd_step_sizes`), 2.5 / steps (Madry et al.) for the constant one.
        schedule: ``"cosine"`` (cycles of large steps first, fine ones last) or ``"constant"``.
        restarts: runs from fresh random starts; a row keeps the first run that breaks it. Each
            run draws the starts of every row, so a row's start does not depend on which rows
            earlier runs broke.

    Returns the first misclassified iterate of each row that any run broke, else the final
    iterate of the last run. With the cosine schedule (or an explicit ``step_size``) and the
    same seed, the rows a run breaks are among those a run with more steps breaks.
    """
    _check(model, x, y, norm)
    if steps < 1 or restarts < 1:
        raise InputError(f"PGD needs at least one step and one restart; got steps={steps}, restarts={restarts}")
    if schedule not in ("cosine", "constant"):
        raise InputError(f"PGD step-size schedule '{schedule}' is not supported; expected cosine or constant")
    radius = _radius(eps, x)
    first = step_size if step_size is not None else (2.5 / steps if schedule == "constant" else 0.5)
    sizes = pgd_step_sizes(steps, first, schedule)
    generator = _generator(seed, x.device)
    full = _Projector(x, radius, norm, constraints)
    best = x.clone()
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    exact = not len(constraints.integer)  # iterates are feasible as they are
    for _ in range(restarts):
        start = full.random_start(generator) if random_start else x
        todo = ~broken
        if not todo.any():
            break
        rows = todo.nonzero().squeeze(1)
        sub = _Projector(x[rows], radius[rows], norm, constraints)
        x_adv = start[rows].clone()
        y_rows = y[rows]
        found = torch.zeros(len(rows), dtype=torch.bool, device=x.device)
        first_break = x[rows]
        row_shape = (-1,) + (1,) * (x.ndim - 1)
        for size in sizes:
            logits, grad = _loss_and_grad(model, x_adv, y_rows)
            _gradient_health(grad, stats)
            if stats is not None:
                stats.model_rows += len(x_adv)
            candidate = x_adv
            if not exact:  # whole-number features: check the rounded iterate, the one a row would get
                candidate = sub.finalise(x_adv)
                with torch.no_grad():
                    logits = model(candidate)
                if stats is not None:
                    stats.model_rows += len(candidate)
            # torch.where rather than boolean indexing: no host sync per step on a GPU
            new = (logits.argmax(dim=1) != y_rows) & ~found
            first_break = torch.where(new.view(row_shape), candidate, first_break)
            found |= new
            if norm == "linf":
                x_adv = torch.clamp(x_adv.addcmul(grad.sign(), size * sub.eps), *sub.box)
            else:
                x_adv = sub(x_adv + size * sub.eps * _step(grad, norm, sub.mutable))
        x_adv = sub.finalise(x_adv.detach())
        with torch.no_grad():
            last = model(x_adv).argmax(dim=1) != y_rows
        if stats is not None:
            stats.model_rows += len(x_adv)
        best[rows] = torch.where(found.view(row_shape), first_break, x_adv)
        broken[rows] = found | last
    return best.detach()


APGD_LOSSES = ("ce", "dlr-targeted")
APGD_MOMENTUM = 0.75  # α: the weight of the new step against the last one
APGD_RHO = 0.75       # ρ: the share of loss-raising steps below which the step size halves
APGD_IMPROVING = 1e-3  # a best loss "still rises" by more than this times (1 + |loss|): not float creep


def apgd_checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints w_j = ⌈p_j·N⌉, with p_0 = 0, p_1 = 0.22 and
    p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06) while p_j ≤ 1 (Croce & Hein 2020), in
    exact hundredths; equal ones once.

    Example:
        >>> apgd_checkpoints(100)
        [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0, 22]
    while (following := p[-1] + max(p[-1] - p[-2] - 3, 6)) <= 100:
        p.append(following)
    return sorted({-(-q * steps // 100) for q in p})


def _apgd_loss(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """Per row: the cross-entropy (``target`` None), else the targeted DLR loss
    −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2) with π the classes by falling logit. With fewer than
    four classes the denominator does not exist, and the loss is the targeted margin
    −(z_y − z_t) (for two classes, the plain margin)."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    margin = logits.gather(1, y[:, None]).squeeze(1) - logits.gather(1, target[:, None]).squeeze(1)
    if logits.shape[1] < 4:
        return -margin
    top = logits.topk(4, dim=1).values
    return -margin / (top[:, 0] - (top[:, 2] + top[:, 3]) / 2 + 1e-12)


def _apgd_targets(logits: Tensor, y: Tensor, count: int) -> list[Tensor]:
    """The classes APGD-T aims at for each row: the ``count`` most likely on the clean input,
    the true class left out, most likely first."""
    others = logits.scatter(1, y[:, None], -torch.inf)
    ranked = others.argsort(dim=1, descending=True, stable=True)
    return [ranked[:, j] for j in range(min(count, logits.shape[1] - 1))]


class _ApgdRun:
    """One APGD run from given starts (Croce & Hein 2020, Algorithm 1), batched over rows.

    Each row has its own step size η (2ε at first). Step k goes to
    z = P(x_k + η·d(∇f(x_k))), then x_{k+1} = P(x_k + α(z − x_k) + (1 − α)(x_k − x_{k−1})) (the
    first step is z), with d the gradient's sign (L∞) or direction (L2) over the mutable
    positions and P the projection onto the ball and the constraints. At each checkpoint a row
    halves η and goes back to its highest-loss point when fewer than ρ of the steps since the
    last checkpoint raised its loss, or when neither its step size nor its best loss changed
    since then. Rows broken by a checkpoint leave the batch there.

    After :meth:`run`: ``found`` (a step's iterate misclassified the row), ``first_break`` (the
    first such iterate, as the row would get it: whole numbers rounded), ``x_max`` and ``f_max``
    (the highest-loss point and its loss), and ``standing``/``improving``: the rows still
    unbroken at the last checkpoint and how many of them had raised their best loss since the
    checkpoint before by more than :data:`APGD_IMPROVING` times (1 + |loss|).
    """

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, radius: Tensor, target: Tensor | None, *,
                 norm: str, constraints: Constraints, stats: AttackStats | None):
        self.model, self.x, self.y, self.radius, self.target = model, x, y, radius, target
        self.norm, self.constraints, self.stats = norm, constraints, stats
        self.exact = not len(constraints.integer)  # iterates are feasible as they are
        n = len(x)
        self.found = torch.zeros(n, dtype=torch.bool, device=x.device)
        self.first_break = x.clone()
        self.x_max, self.f_max = x.clone(), torch.full((n,), -torch.inf, dtype=x.dtype, device=x.device)
        self.standing = self.improving = 0

    def _evaluate(self, x_adv: Tensor, idx: Tensor, project: _Projector) -> tuple[Tensor, Tensor]:
        """Loss and input gradient of rows ``idx`` at ``x_adv``; marks the rows it misclassifies."""
        x_adv = x_adv.detach().requires_grad_(True)
        y, target = self.y[idx], None if self.target is None else self.target[idx]
        with torch.enable_grad():
            logits = self.model(x_adv)
            loss = _apgd_loss(logits, y, target)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        _gradient_health(grad, self.stats)
        candidate, logits = x_adv.detach(), logits.detach()
        if not self.exact:  # whole-number features: check the rounded iterate, the one a row would get
            candidate = project.finalise(candidate)
            with torch.no_grad():
                logits = self.model(candidate)
        if self.stats is not None:
            self.stats.model_rows += len(idx) * (1 if self.exact else 2)
        # torch.where rather than boolean indexing: no host sync per step on a GPU
        new = (logits.argmax(dim=1) != y) & ~self.found[idx]
        row_shape = (-1,) + (1,) * (candidate.ndim - 1)
        self.first_break[idx] = torch.where(new.view(row_shape), candidate, self.first_break[idx])
        self.found[idx] = self.found[idx] | new
        return loss.detach(), grad

    def run(self, start: Tensor, steps: int) -> _ApgdRun:
        x, device = self.x, self.x.device
        row_shape = (-1,) + (1,) * (x.ndim - 1)
        idx = torch.arange(len(x), device=device)
        project = _Projector(x, self.radius, self.norm, self.constraints)
        x_k = start.detach()
        f_k, g_k = self._evaluate(x_k, idx, project)
        x_max, f_max, g_max = x_k, f_k, g_k
        x_prev = x_k
        eta = 2 * self.radius.clone()
        increases = torch.zeros(len(x), device=device)
        f_max_last = f_max  # at the last checkpoint
        halved_last = torch.zeros(len(x), dtype=torch.bool, device=device)
        checkpoints = apgd_checkpoints(steps)
        last_checkpoint = 0
        for k in range(steps):
            z = project(x_k + eta * _step(g_k, self.norm, project.mutable))
            if k == 0:
                x_new = z
            else:
                x_new = project(x_k + APGD_MOMENTUM * (z - x_k) + (1 - APGD_MOMENTUM) * (x_k - x_prev))
            f_new, g_new = self._evaluate(x_new, idx, project)
            increases += f_new > f_k
            better = f_new > f_max
            x_max = torch.where(better.view(row_shape), x_new, x_max)
            g_max = torch.where(better.view(row_shape), g_new, g_max)
            f_max = torch.where(better, f_new, f_max)
            x_prev, x_k, f_k, g_k = x_k, x_new, f_new, g_new
            if k + 1 not in checkpoints:
                continue
            # the checkpoint: halve η and go back to the best point where the loss stalled
            stalled = increases < APGD_RHO * (k + 1 - last_checkpoint)
            unchanged = ~halved_last & (f_max <= f_max_last)
            halve = stalled | unchanged
            if k + 1 == checkpoints[-1]:
                unbroken = ~self.found[idx]
                self.standing += int(unbroken.sum())
                rose = f_max - f_max_last > APGD_IMPROVING * (1 + f_max_last.abs())
                self.improving += int((unbroken & rose).sum())
            eta = torch.where(halve.view(row_shape), eta / 2, eta)
            x_k = torch.where(halve.view(row_shape), x_max, x_k)  # x_prev stays: AutoAttack's momentum
            g_k = torch.where(halve.view(row_shape), g_max, g_k)
            f_k = torch.where(halve, f_max, f_k)
            increases.zero_()
            f_max_last, halved_last, last_checkpoint = f_max, halve, k + 1
            self._keep(idx, x_max, f_max)
            keep = ~self.found[idx]  # rows broken leave the batch (one host sync per checkpoint)
            if not keep.any():
                return self
            if not keep.all():
                idx, x_k, x_prev, x_max, eta = idx[keep], x_k[keep], x_prev[keep], x_max[keep], eta[keep]
                f_k, g_k, f_max, g_max, increases = f_k[keep], g_k[keep], f_max[keep], g_max[keep], increases[keep]
                f_max_last, halved_last = f_max_last[keep], halved_last[keep]
                project = _Projector(x[idx], self.radius[idx], self.norm, self.constraints)
        self._keep(idx, x_max, f_max)
        return self

    def _keep(self, idx: Tensor, x_max: Tensor, f_max: Tensor) -> None:
        self.x_max[idx], self.f_max[idx] = x_max, f_max


def apgd(model: nn.Module, x: Tensor, y: Tensor, eps, *, norm: str = "linf", constraints: Constraints,
         steps: int = DEFAULT_STEPS, restarts: int = 1, loss: str = "ce", target_classes: int = 9, random_start: bool = True,
         seed: int = 0, stats: AttackStats | None = None) -> Tensor:
    """Auto-PGD (Croce & Hein 2020): PGD with momentum and a step size that halves at
    checkpoints where the loss stalls (see :class:`_ApgdRun` and :func:`apgd_checkpoints`).

    Args:
        loss: ``"ce"`` (APGD-CE) or ``"dlr-targeted"`` (APGD-T, as AutoAttack's apgd-t): one
            targeted-DLR run per target, the ``target_classes`` most likely wrong classes on the
            clean input in turn, each on the rows still standing (with fewer than four classes the
            targeted margin; see :func:`_apgd_loss`).
        restarts: runs from fresh random starts (per target), each on the rows still standing.
            Every run draws the starts of every row, so a row's start does not depend on which
            rows earlier runs broke.
        random_start: start from a point drawn in the ball (else from the row itself).

    Rows the model gets wrong already are returned as they are. A broken row gets the first
    iterate that misclassified it (whole-number features rounded, as for :func:`pgd`); a row
    left standing gets its highest-loss point over all runs. ``stats`` counts, besides the model
    rows, the rows left unbroken at a run's last checkpoint and those of them whose best loss
    still rose since the checkpoint before (:attr:`AttackStats.still_improving`).
    """
    _check(model, x, y, norm)
    if steps < 1 or restarts < 1:
        raise InputError(f"APGD needs at least one step and one restart; got steps={steps}, restarts={restarts}")
    if loss not in APGD_LOSSES:
        raise InputError(f"APGD loss '{loss}' is not supported; expected one of {', '.join(APGD_LOSSES)}")
    if target_classes < 1:
        raise InputError(f"APGD-T needs at least one target class; got target_classes={target_classes}")
    radius = _radius(eps, x)
    generator = _generator(seed, x.device)
    full = _Projector(x, radius, norm, constraints)
    with torch.no_grad():
        clean = model(x)
    if stats is not None:
        stats.model_rows += len(x)
    standing = clean.argmax(dim=1) == y  # rows the model gets wrong already stay as they are
    targets: list[Tensor | None] = [None] if loss == "ce" else list(_apgd_targets(clean, y, target_classes))
    best = x.clone()
    best_loss = torch.full((len(x),), -torch.inf, dtype=x.dtype, device=x.device)
    row_shape = (-1,) + (1,) * (x.ndim - 1)
    for target in targets:
        for _ in range(restarts):
            start = full.random_start(generator) if random_start else x
            rows = standing.nonzero().squeeze(1)
            if not len(rows):
                return best.detach()
            one = _ApgdRun(model, x[rows], y[rows], radius[rows], None if target is None else target[rows],
                           norm=norm, constraints=constraints, stats=stats).run(start[rows], steps)
            if stats is not None:
                stats.checkpoint_rows += one.standing
                stats.improving_rows += one.improving
            higher = ~one.found & (one.f_max > best_loss[rows])
            kept = torch.where(higher.view(row_shape), one.x_max, best[rows])
            best[rows] = torch.where(one.found.view(row_shape), one.first_break, kept)
            best_loss[rows] = torch.where(higher, one.f_max, best_loss[rows])
            standing[rows] = ~one.found
    # a row left standing gets its highest-loss point with whole numbers rounded: every rounded
    # iterate was checked, so this one does not misclassify
    left = standing.nonzero().squeeze(1)
    if len(left):
        best[left] = _Projector(x[left], radius[left], norm, constraints).finalise(best[left])
    return best.detach()


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """Logit of the true class minus the largest other logit: negative means misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], -torch.inf)
    return true - other.amax(dim=1)


def _square_fraction(p_init: float, it: int, queries: int) -> float:
    """Square's schedule of the share of positions changed per query (rescaled to 10,000 queries)."""
    it = int(it / queries * 10_000)
    for bound, divisor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def square(model: nn.Module, x: Tensor, y: Tensor, eps, *, norm: str = "linf", constraints: Constraints,
           queries: int = DEFAULT_QUERIES, p_init: float = 0.1, seed: int = 0, stats: AttackStats | None = None) -> Tensor:
    """Score-based Square attack, L∞; for ``norm="l2"`` it runs in the L∞ ball of radius
    ε/√(mutable positions), which lies inside the L2 ball.

    Images (N, C, H, W) get square windows, tables random subsets of mutable columns; each
    candidate sets the chosen positions to ±ε and is kept for a row when its margin falls.
    """
    _check(model, x, y, norm)
    radius = _radius(eps, x)
    if norm == "l2":
        radius = radius / math.sqrt(max(constraints.n_mutable(), 1))
    project = _Projector(x, radius, "linf", constraints)
    generator = _generator(seed, x.device)
    mutable = project.mutable

    def signs(shape) -> Tensor:
        return torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1

    def evaluate(candidate: Tensor, rows: Tensor) -> Tensor:
        with torch.no_grad():
            if stats is not None:
                stats.model_rows += len(candidate)
            return _margin(model(candidate), y[rows])

    image = x.ndim == 4
    if image:  # vertical stripes of ±ε, as the paper's initialisation
        start = signs((len(x), x.shape[1], 1, x.shape[3])).expand_as(x)
    else:
        start = signs(x.shape)
    x_adv = project.finalise(project(x + radius * start))
    all_rows = torch.arange(len(x), device=x.device)
    margin = evaluate(x_adv, all_rows)
    positions = mutable.flatten().nonzero().squeeze(1)
    sub: _Projector | None = None
    sub_rows = all_rows
    for it in range(queries - 1):
        active = (margin > 0).nonzero().squeeze(1)
        if not len(active):
            break
        p = _square_fraction(p_init, it, queries)
        delta = x_adv[active] - x[active]
        if image:
            c, h, w = x.shape[1:]
            side = max(1, min(h - 1, int(round(math.sqrt(p * h * w)))))
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator, device=x.device))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator, device=x.device))
            window = torch.zeros_like(x[:1])
            window[..., top:top + side, left:left + side] = 1
            new = signs((len(active), c, 1, 1)).expand(-1, -1, h, w)
            delta = torch.where(window.bool(), new * radius[active], delta)
        else:
            count = max(1, int(round(p * len(positions))))
            chosen = positions[torch.randperm(len(positions), generator=generator, device=x.device)[:count]]
            flat = delta.flatten(1).clone()
            flat[:, chosen] = signs((len(active), count)) * radius[active].flatten(1)
            delta = flat.view_as(delta)
        if sub is None or not torch.equal(sub_rows, active):  # rows standing change seldom: reuse their box
            sub, sub_rows = _Projector(x[active], radius[active], "linf", constraints), active
        candidate = sub.finalise(sub(x[active] + delta))
        new_margin = evaluate(candidate, active)
        better = new_margin < margin[active]
        x_adv[active[better]] = candidate[better]
        margin[active[better]] = new_margin[better]
    return x_adv.detach()


def random_noise(model: nn.Module, x: Tensor, y: Tensor, eps, *, norm: str = "linf", constraints: Constraints,
                 kind: str = "gaussian", draws: int = 10, seed: int = 0, stats: AttackStats | None = None) -> Tensor:
    """Noise on the ε-sphere: ``draws`` Gaussian (or uniform) directions scaled to norm ε over
    the mutable positions; a row keeps the first draw that misclassifies it."""
    _check(model, x, y, norm)
    if kind not in ("gaussian", "uniform"):
        raise InputError(f"noise kind '{kind}' is not supported; expected gaussian or uniform")
    radius = _radius(eps, x)
    project = _Projector(x, radius, norm, constraints)
    generator = _generator(seed, x.device)
    best = x.clone()
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for _ in range(draws):
        noise = torch.empty_like(x)
        noise.normal_(generator=generator) if kind == "gaussian" else noise.uniform_(-1, 1, generator=generator)
        noise = noise * project.mutable
        noise = noise / _flat_norm(noise, norm).clamp_min(1e-12).view(radius.shape) * radius
        candidate = project.finalise(project(x + noise))
        with torch.no_grad():
            wrong = model(candidate).argmax(dim=1) != y
        if stats is not None:
            stats.model_rows += len(x)
        take = wrong & ~broken
        best[take] = candidate[take]
        broken |= wrong
    left = ~broken
    best[left] = candidate[left]
    return best.detach()


def run_attack(name: str, model: nn.Module, x: Tensor, y: Tensor, eps, *, norm: str = "linf",
               constraints: Constraints, steps: int = DEFAULT_STEPS, restarts: int = 1, queries: int = DEFAULT_QUERIES,
               seed: int = 0,
               stats: AttackStats | None = None) -> Tensor:
    """The attack ``name`` of :data:`~scrutiny.audit.robustness.registry.ATTACKS` on one batch.

    Args:
        steps, restarts: the iterations and random restarts of PGD and APGD (APGD-T: per target class).
        queries: the Square attack's queries per row.
        seed: seeds the attack's random draws (PGD's and APGD's starts, Square's squares, the noise).

    Example:
        >>> box = image_constraints((1, 8, 8), (0.0, 1.0))  # doctest: +SKIP
        >>> x_adv = run_attack("pgd", model, x, y, 0.1, constraints=box, steps=10)  # doctest: +SKIP
    """
    if name not in ATTACK_INFO:
        raise InputError(f"unknown attack {name!r}; expected: {', '.join(ATTACKS)}")
    settings = {"steps": steps, "restarts": restarts, "queries": queries, "seed": seed}
    return _RUNNERS[name](model, x, y, eps, settings, norm=norm, constraints=constraints, stats=stats)


# each attack of the registry, given its settings
_RUNNERS = {
    "pgd": lambda model, x, y, eps, s, **common: pgd(model, x, y, eps, steps=s["steps"], restarts=s["restarts"],
                                                      seed=s["seed"], **common),
    "fgsm": lambda model, x, y, eps, s, **common: fgsm(model, x, y, eps, **common),
    "apgd-ce": lambda model, x, y, eps, s, **common: apgd(model, x, y, eps, steps=s["steps"], restarts=s["restarts"],
                                                          loss="ce", seed=s["seed"], **common),
    "apgd-t": lambda model, x, y, eps, s, **common: apgd(model, x, y, eps, steps=s["steps"], restarts=s["restarts"],
                                                         loss="dlr-targeted", seed=s["seed"], **common),
    "square": lambda model, x, y, eps, s, **common: square(model, x, y, eps, queries=s["queries"], seed=s["seed"],
                                                            **common),
    "gaussian": lambda model, x, y, eps, s, **common: random_noise(model, x, y, eps, kind="gaussian", seed=s["seed"],
                                                                    **common),
    "uniform": lambda model, x, y, eps, s, **common: random_noise(model, x, y, eps, kind="uniform", seed=s["seed"],
                                                                   **common),
}
