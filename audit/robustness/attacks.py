"""Adversarial attacks on a classifier's inputs, batched, inside explicit constraints.

Every attack takes ``(model, x, y, eps)`` with ``eps`` a number or one radius per row and
returns adversarial inputs that lie in the ε-ball of their row (``"linf"`` or ``"l2"``) and
satisfy the :class:`Constraints`: the valid input range, features that must not change, and
whole-number features. The model is only ever asked for outputs and input gradients
(``torch.autograd.grad`` w.r.t. the inputs), so no gradient is left on its weights.

- :func:`fgsm`: one signed-gradient step (Goodfellow et al. 2015).
- :func:`pgd`: projected gradient descent (Madry et al. 2018) with random start, a cosine or
  constant step-size schedule and restarts; a row counts as broken as soon as any iterate
  misclassifies it, and that iterate is returned.
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

from scrutiny.audit.robustness.registry import ATTACK_INFO, ATTACKS, NORMS
from scrutiny.errors import InputError

__all__ = ["NORMS", "Constraints", "image_constraints", "tabular_constraints", "fgsm", "pgd", "square",
           "random_noise", "run_attack", "perturbation_norm", "AttackStats"]


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
        raise InputError(f"{model_spec.name}: no numeric feature is left mutable; "
                         "nothing for a tabular attack to change")
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

    @property
    def zero_gradient(self) -> float:
        """Share of the checked rows whose first input gradient is all zero (NaN when none was checked)."""
        return self.zero_rows / self.gradient_rows if self.gradient_rows else float("nan")

    @property
    def nonfinite_gradient(self) -> float:
        """Share of the checked rows whose first input gradient has NaN/inf (NaN when none was checked)."""
        return self.nonfinite_rows / self.gradient_rows if self.gradient_rows else float("nan")

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
        idx = torch.as_tensor(c.integer, device=x_adv.device)
        scale = torch.as_tensor(c.scale, dtype=torch.float64, device=x_adv.device)
        offset = torch.as_tensor(c.offset, dtype=torch.float64, device=x_adv.device)
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


def pgd(model: nn.Module, x: Tensor, y: Tensor, eps, *, norm: str = "linf", constraints: Constraints,
        steps: int = 40, step_size: float | None = None, schedule: str = "cosine", restarts: int = 1,
        random_start: bool = True, seed: int = 0, stats: AttackStats | None = None) -> Tensor:
    """Projected gradient ascent on the cross-entropy.

    Args:
        step_size: first step as a multiple of ε. Default: 2.5 / steps (Madry et al.) for the
            constant schedule, twice that for the cosine one, whose mean step is half its first.
        schedule: ``"cosine"`` (large steps first, fine ones last) or ``"constant"``.
        restarts: runs from fresh random starts; a row keeps the first run that breaks it.

    Returns the first misclassified iterate of each row that any run broke, else the final
    iterate of the last run.
    """
    _check(model, x, y, norm)
    if steps < 1 or restarts < 1:
        raise InputError(f"PGD needs at least one step and one restart; got steps={steps}, restarts={restarts}")
    if schedule not in ("cosine", "constant"):
        raise InputError(f"PGD step-size schedule '{schedule}' is not supported; expected cosine or constant")
    radius = _radius(eps, x)
    first = step_size if step_size is not None else (2.5 if schedule == "constant" else 5.0) / steps
    sizes = [first * (0.5 * (1 + math.cos(math.pi * t / steps)) if schedule == "cosine" else 1.0) for t in range(steps)]
    generator = _generator(seed, x.device)
    best = x.clone()
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    exact = not len(constraints.integer)  # iterates are feasible as they are
    for _ in range(restarts):
        todo = ~broken
        if not todo.any():
            break
        rows = todo.nonzero().squeeze(1)
        sub = _Projector(x[rows], radius[rows], norm, constraints)
        x_adv = sub.random_start(generator) if random_start else x[rows].clone()
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
           queries: int = 1000, p_init: float = 0.1, seed: int = 0, stats: AttackStats | None = None) -> Tensor:
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
        sub = _Projector(x[active], radius[active], "linf", constraints)
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
               constraints: Constraints, steps: int = 40, restarts: int = 1, queries: int = 1000, seed: int = 0,
               stats: AttackStats | None = None) -> Tensor:
    """The attack ``name`` of :data:`~scrutiny.audit.robustness.registry.ATTACKS` on one batch.

    Args:
        steps, restarts: PGD's iterations and random restarts.
        queries: the Square attack's queries per row.
        seed: seeds the attack's random draws (PGD's starts, Square's squares, the noise).

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
    "square": lambda model, x, y, eps, s, **common: square(model, x, y, eps, queries=s["queries"], seed=s["seed"],
                                                            **common),
    "gaussian": lambda model, x, y, eps, s, **common: random_noise(model, x, y, eps, kind="gaussian", seed=s["seed"],
                                                                    **common),
    "uniform": lambda model, x, y, eps, s, **common: random_noise(model, x, y, eps, kind="uniform", seed=s["seed"],
                                                                   **common),
}
