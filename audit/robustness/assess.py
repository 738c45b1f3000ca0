"""The robustness family: attack a model on a sample of the test split, over a grid of ε.

:func:`assess_robustness` runs each attack of :mod:`.attacks` at each ε on the same seeded
rows and reports clean accuracy, robust accuracy and attack success rate (per attack, and
the per-row worst case over all attacks), each row's smallest ε that flips it (binary search
with PGD), a capped set of adversarial examples, an out-of-distribution score of the
adversarial inputs under an autoencoder, and warnings when the evaluation looks weak.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from scrutiny.audit.attributions.explain import sample_test_rows
from scrutiny.audit.robustness.attacks import (
    AttackStats,
    Constraints,
    image_constraints,
    run_attack,
    tabular_constraints,
)
from scrutiny.audit.robustness.details import CurveEntry
from scrutiny.audit.robustness.registry import ATTACKS, DEFAULT_ATTACKS, NORMS, WHITE_BOX, parse_attacks, primary_attack
from scrutiny.devices import resolve_device
from scrutiny.errors import InputError
from scrutiny.limits import check_int
from scrutiny.modality import MODALITIES, modality
from scrutiny.models import Dataset

__all__ = ["ATTACKS", "DEFAULT_EPS", "Example", "Robustness", "assess_robustness",
           "constraints_for", "fit_detector", "parse_attacks"]

DEFAULT_EPS = {name: m.default_eps for name, m in MODALITIES.items()}


@dataclass
class Example:
    """One adversarial example: test row, the attack and ε that made it, the predictions."""

    row: int
    attack: str
    eps: float
    label: int
    before: int
    after: int
    x: np.ndarray
    x_adv: np.ndarray
    changes: list[tuple[str, object, object]] = field(default_factory=list)  # tables: (feature, before, after)


@dataclass
class Robustness:
    rows: np.ndarray
    norm: str
    eps: tuple[float, ...]
    attacks: tuple[str, ...]
    curve: list[CurveEntry]
    robust: dict[str, np.ndarray]            # attack -> (n_eps, N) bool: still right under that attack
    min_eps: np.ndarray                      # (N,): smallest ε that flips the row; 0 if wrong already, inf if none ≤ search_eps
    search_eps: float
    large_eps_accuracy: float                # PGD accuracy at search_eps
    examples: list[Example]
    constraints: tuple[str, ...]
    warnings: list[str]
    gradient: dict[str, float]               # shares of rows with all-zero / non-finite input gradients
    ood: list[dict] | None
    settings: dict
    seconds: dict[str, float]

    @property
    def median_min_eps(self) -> float:
        return float(np.median(self.min_eps))

    def point(self, attack: str, eps: float) -> CurveEntry:
        return next(p for p in self.curve if p.attack == attack and np.isclose(p.eps, eps))


def constraints_for(dataset: Dataset, preprocessor=None, *, immutable=(), mutable=()) -> Constraints:
    """What an attack on ``dataset`` may change. Tables hold the protected attributes and the
    ``immutable`` columns of ``dataset.spec`` (not of a checkpoint's older spec), less ``mutable``,
    plus ``immutable``."""
    spec = dataset.spec
    if spec.task == "image":
        if immutable or mutable:
            raise InputError("immutable and mutable name table features; this data set holds images")
        return image_constraints(tuple(spec.image_shape), tuple(spec.pixel_range or (0.0, 1.0)))
    preprocessor = preprocessor or dataset.preprocessor
    return tabular_constraints(preprocessor, preprocessor.transform(dataset.train.X), immutable=immutable,
                               mutable=mutable, spec=spec)


def fit_detector(dataset: Dataset, preprocessor=None, *, seed: int = 0, epochs: int = 30, device=None) -> nn.Module:
    """A small autoencoder trained on the training split: its reconstruction error is the
    out-of-distribution score."""
    from scrutiny.models import build_model
    from scrutiny.models.training import train

    X = (preprocessor or dataset.preprocessor).transform(dataset.train.X)
    torch.manual_seed(seed)
    model = build_model("autoencoder", input_shape=X.shape[1:], hidden=(64,), latent=min(16, max(2, X[0].size // 4)))
    return train(model, X, None, seed=seed, epochs=epochs, progress=False, device=device).model.cpu().eval()


SEARCH_STEPS = 8  # bisection steps of the smallest-eps search


def assess_robustness(
    model: nn.Module,
    dataset: Dataset,
    *,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    eps: Sequence[float] | None = None,
    norm: str = "linf",
    samples: int = 500,
    preprocessor: Any = None,
    immutable: Sequence[str] = (),
    mutable: Sequence[str] = (),
    steps: int = 40,
    restarts: int = 1,
    queries: int = 1000,
    search_steps: int = SEARCH_STEPS,
    detector: nn.Module | None = None,
    max_examples: int = 16,
    batch_size: int = 1024,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    gradient_model: nn.Module | None = None,
) -> Robustness:
    """Attack ``samples`` seeded test rows with each attack at each ε.

    Args:
        model: classifier returning logits.
        dataset: its test split is attacked; its training split sets tabular ranges.
        attacks: names from :data:`ATTACKS`. Default: the registry's default ensemble
            (:data:`~scrutiny.audit.robustness.registry.DEFAULT_ATTACKS`).
        eps: radii (L∞ or L2; tables: training standard deviations). Default: the modality's
            ``default_eps``.
        norm: ``"linf"`` or ``"l2"``.
        immutable, mutable: table features to hold, or to free from the default holds
            (protected attributes and the data set's ``immutable`` columns).
        steps, restarts: PGD iterations and random restarts.
        queries: Square attack queries per row.
        search_steps: bisection steps of the smallest-ε search (PGD with ``steps // 2`` steps);
            0 leaves the search out (its radii and accuracy NaN).
        detector: an autoencoder for the out-of-distribution score; None skips the score.
        max_examples: adversarial examples kept for reports.
        seed: seeds the row sample and every attack.
        device: where to attack: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Default: CUDA when present.
        gradient_model: the model white-box attacks differentiate, for a ``model`` without gradients
            (an ONNX file) whose PyTorch twin gives the same outputs; the adversarial inputs are
            then judged by ``model`` itself. Default: ``model``.

    Example:
        >>> data = load_dataset("digits")  # doctest: +SKIP
        >>> found = assess_robustness(train_on(data).model, data, attacks=["pgd"], eps=[0.1], samples=100)  # doctest: +SKIP
        >>> found.point("worst case", 0.1).robust_accuracy  # doctest: +SKIP
        0.43
    """
    attacks = parse_attacks(list(attacks))
    task = dataset.spec.task
    eps = _checked_eps(eps, norm, task)
    for name, value in (("samples", samples), ("steps", steps), ("restarts", restarts), ("queries", queries),
                        ("seed", seed)):
        check_int(name, value)
    constraints = constraints_for(dataset, preprocessor, immutable=immutable, mutable=mutable)
    dev = resolve_device(device)
    preprocessor = preprocessor or dataset.preprocessor
    rows, x_all, y_all = _sample(dataset, preprocessor, samples, seed)
    was_training = model.training
    attacker = _Attacker(model.to(dev).eval(), dev, norm=norm, constraints=constraints, steps=steps,
                         restarts=restarts, queries=queries, batch_size=batch_size,
                         gradient_model=None if gradient_model is None else gradient_model.to(dev).eval())
    # very large in either norm: the L∞ radius, or the L2 norm of that radius on every position
    search = modality(task).search_eps * (1 if norm == "linf" else float(np.sqrt(x_all[0].numel())))
    try:
        clean_pred = attacker.predict(x_all)
        correct = clean_pred == y_all
        clean_acc = float(correct.float().mean())
        with _progress(progress, len(attacks) * len(eps) + search_steps + 1) as advance:
            robust, adversarial, seconds = _attack_grid(attacker, attacks, eps, x_all, y_all, correct, seed, advance)
            start = time.perf_counter()
            if search_steps:
                min_eps, large_acc = _smallest_eps(attacker, x_all, y_all, correct, search, search_steps, advance,
                                                   seed=seed, steps=max(steps // 2, 10))
            else:
                min_eps, large_acc = np.full(len(rows), np.nan), float("nan")
            seconds["smallest_eps"] = time.perf_counter() - start
        robust["worst case"] = np.logical_and.reduce([robust[a] for a in attacks])
        curve = _curve(robust, eps, clean_acc, correct.numpy(), len(rows))
        stats = attacker.stats
        gradient = {"zero": stats.zero_gradient, "nonfinite": stats.nonfinite_gradient}
        warnings = _weak_evaluation(robust, eps, attacks, gradient, large_acc, search, clean_acc,
                                    tabular=task != "image", n=len(rows))
        primary = primary_attack(attacks)
        examples = _examples(adversarial, primary, eps, x_all, y_all, clean_pred, attacker.predict, rows, max_examples,
                             preprocessor if task != "image" else None)
        ood = None
        if detector is not None:
            start = time.perf_counter()
            ood = [_ood(detector, x_all, adversarial[primary, radius], correct.numpy() & ~robust[primary][k], radius,
                        primary, dev)
                   for k, radius in enumerate(eps)]
            seconds["ood"] = time.perf_counter() - start
    finally:
        model.train(was_training)
    return Robustness(
        rows=rows, norm=norm, eps=eps, attacks=tuple(attacks), curve=curve, robust=robust, min_eps=min_eps,
        search_eps=search, large_eps_accuracy=large_acc, examples=examples, constraints=constraints.applied,
        warnings=warnings, gradient=gradient, ood=ood,
        settings={"steps": steps, "restarts": restarts, "queries": queries, "search_steps": search_steps,
                  "loss": "cross-entropy", "schedule": "cosine", "seed": seed, "device": str(dev),
                  "model_rows": stats.model_rows, "samples": len(rows)},
        seconds=seconds,
    )


def _checked_eps(eps, norm: str, task: str) -> tuple[float, ...]:
    """The ε grid, sorted and deduplicated: the data type's default when None."""
    if norm not in NORMS:
        raise InputError(f"norm {norm!r}: expected one of {', '.join(NORMS)}")
    eps = tuple(float(e) for e in (eps if eps is not None else modality(task).default_eps))
    float32_max = float(np.finfo(np.float32).max)  # the attacks compute in float32: a larger eps becomes inf
    if not eps or not all(0 < e <= float32_max for e in eps):
        raise InputError(f"eps: expected finite positive numbers (at most {float32_max:.4g} in float32), "
                         f"got {', '.join(map(str, eps)) or 'none'}")
    return tuple(sorted(set(eps)))


def _sample(dataset: Dataset, preprocessor, samples: int, seed: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The seeded test rows: their indices, encoded inputs and labels."""
    rows, test_X = sample_test_rows(dataset, samples, seed)
    x = torch.as_tensor(preprocessor.transform(test_X), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(dataset.test.y)[rows], dtype=torch.long)
    return rows, x, y


class _Attacker:
    """Runs the attacks of :mod:`.attacks` by name on ``device`` in row batches, with one set of
    constraints, and gathers their statistics."""

    def __init__(self, model: nn.Module, device: torch.device, *, norm: str, constraints: Constraints, steps: int,
                 restarts: int, queries: int, batch_size: int, gradient_model: nn.Module | None = None):
        self.model, self.device, self.norm, self.constraints = model, device, norm, constraints
        self.gradient_model = gradient_model if gradient_model is not None else model
        self.steps, self.restarts, self.queries, self.batch_size = steps, restarts, queries, batch_size
        self.stats = AttackStats()

    def attack(self, name: str, radius, x: torch.Tensor, y: torch.Tensor, seed: int,
               steps: int | None = None) -> torch.Tensor:
        """``name`` on one batch already on the device; ``steps`` overrides PGD's. A white-box attack
        differentiates the gradient model (the model itself, or its PyTorch twin)."""
        attacked = self.gradient_model if name in WHITE_BOX else self.model
        return run_attack(name, attacked, x, y, radius, norm=self.norm, constraints=self.constraints,
                          steps=self.steps if steps is None else steps, restarts=self.restarts, queries=self.queries,
                          seed=seed, stats=self.stats)

    def adversarial(self, name: str, radius, x: torch.Tensor, y: torch.Tensor, seed: int,
                    steps: int | None = None) -> torch.Tensor:
        """``name`` on all rows, at ``radius`` (a number, or a tensor of one per row); on the CPU."""
        if isinstance(radius, torch.Tensor):
            return self.batched(lambda xb, yb, rb: self.attack(name, rb, xb, yb, seed, steps), x, y, radius)
        return self.batched(lambda xb, yb: self.attack(name, radius, xb, yb, seed, steps), x, y)

    def batched(self, fn, *arrays: torch.Tensor) -> torch.Tensor:
        """``fn`` over row batches on the device; results back on the CPU."""
        size = self.batch_size
        return torch.cat([fn(*(a[i:i + size].to(self.device) for a in arrays)).cpu()
                          for i in range(0, len(arrays[0]), size)])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.batched(lambda b: self.model(b).argmax(dim=1), x)


def _attack_grid(attacker: _Attacker, attacks, eps, x, y, correct, seed: int, advance):
    """Each attack at each ε (the k-th radius seeded ``seed + k``). Returns, per attack, which
    rows stay right at each ε ((n_eps, N) bool), the adversarial inputs per (attack, ε), and the
    seconds each attack took."""
    robust: dict[str, np.ndarray] = {}
    adversarial: dict[tuple[str, float], torch.Tensor] = {}
    seconds: dict[str, float] = {}
    for name in attacks:
        start = time.perf_counter()
        flags = []
        for k, radius in enumerate(eps):
            x_adv = attacker.adversarial(name, radius, x, y, seed + k)
            adversarial[name, radius] = x_adv
            flags.append((attacker.predict(x_adv) == y).numpy() & correct.numpy())
            advance(f"{name} eps={radius:g}")
        robust[name] = np.array(flags)
        seconds[name] = time.perf_counter() - start
    return robust, adversarial, seconds


def _curve(robust: dict[str, np.ndarray], eps, clean_acc: float, correct: np.ndarray, n: int) -> list[CurveEntry]:
    return [
        CurveEntry(name, radius, clean_acc, float(flags[k].mean()),
                   float(1 - flags[k][correct].mean()) if correct.any() else 0.0, n)
        for name, flags in robust.items() for k, radius in enumerate(eps)
    ]


class _progress:
    def __init__(self, show: bool, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="attacks", disable=not show)

    def __enter__(self):
        def advance(label: str) -> None:
            self.bar.set_postfix_str(label)
            self.bar.update()

        return advance

    def __exit__(self, *exc):
        self.bar.close()


def _smallest_eps(attacker: _Attacker, x, y, correct, top: float, search_steps: int, advance, *, seed: int, steps: int):
    """Bisection per row on [0, top]: the smallest radius at which PGD (``steps`` steps) flips
    the row (rows the model gets wrong already: 0; rows PGD cannot flip even at ``top``: inf).
    Returns the radii and the accuracy at ``top``."""
    n = len(x)
    flips = lambda x_, y_, radii: attacker.predict(attacker.adversarial("pgd", radii, x_, y_, seed, steps)) != y_  # noqa: E731
    top_t = torch.full((n,), top)
    flipped = flips(x, y, top_t)
    advance(f"pgd eps={top:g}")
    large_acc = float((~flipped & correct).float().mean())
    low, high = torch.zeros(n), top_t.clone()
    search = correct & flipped
    for _ in range(search_steps):
        idx = search.nonzero().squeeze(1)
        if len(idx):
            mid = (low[idx] + high[idx]) / 2
            hit = flips(x[idx], y[idx], mid)
            high[idx[hit]] = mid[hit]
            low[idx[~hit]] = mid[~hit]
        advance("smallest eps")
    result = torch.where(search, high, torch.full((n,), torch.inf))
    result[~correct] = 0.0
    return result.numpy(), large_acc


def _weak_evaluation(robust, eps, attacks, gradient, large_acc, search, clean_acc, *, tabular: bool, n: int) -> list[str]:
    slack = max(0.02, 2.0 / n)  # two rows, or two points
    warnings = []
    for name in attacks:
        acc = robust[name].mean(axis=1)
        rises = [(eps[k], eps[k + 1]) for k in range(len(eps) - 1) if acc[k + 1] > acc[k] + slack]
        if rises:
            a, b = rises[0]
            warnings.append(f"{name}: robust accuracy rises from eps={a:g} to eps={b:g} "
                            f"({acc[eps.index(a)]:.1%} -> {acc[eps.index(b)]:.1%}); a working attack only gets stronger with eps")
    white = [a for a in WHITE_BOX if a in attacks]
    if white:  # the strongest white-box attack at each eps against each gradient-free one
        best_white = np.min([robust[a].mean(axis=1) for a in white], axis=0)
        for other in (a for a in attacks if a not in WHITE_BOX):
            gap = best_white - robust[other].mean(axis=1)
            worst = int(np.argmax(gap))
            if gap[worst] > slack:
                warnings.append(f"{other} (no gradients) beats the gradient attacks ({', '.join(white)}) at eps={eps[worst]:g} "
                                f"(robust accuracy {robust[other][worst].mean():.1%} vs {best_white[worst]:.1%}): "
                                "the gradients may be masked, and the white-box figures overstate robustness")
    # held features can legitimately keep table rows right at any eps: there, only an attack
    # that flips fewer than half the rows at a very large eps is suspect
    if np.isfinite(large_acc) and large_acc > (0.5 * clean_acc if tabular else 0.05):
        note = " although only the constrained features could move" if tabular else ""
        warnings.append(f"PGD at a very large eps={search:g} leaves accuracy at {large_acc:.1%} (clean {clean_acc:.1%}){note}: "
                        "an attack that works should bring it near 0")
    if gradient["zero"] > 0.05 or gradient["nonfinite"] > 0:
        warnings.append(f"input gradients are all zero for {gradient['zero']:.0%} of rows and NaN/inf for "
                        f"{gradient['nonfinite']:.0%}: gradient attacks cannot work here (masked or broken gradients)")
    return warnings


def _examples(adversarial, attack, eps, x, y, clean_pred, predict, rows, cap, preprocessor) -> list[Example]:
    """Up to ``cap`` flipped rows of ``attack``, spread over the ε grid, smallest ε first."""
    examples: list[Example] = []
    seen: set[int] = set()
    per_eps = max(1, -(-cap // len(eps)))
    for radius in eps:
        x_adv = adversarial[attack, radius]
        after = predict(x_adv)
        flipped = ((after != y) & (clean_pred == y)).nonzero().squeeze(1).tolist()
        taken = [i for i in flipped if i not in seen][:per_eps]
        for i in taken[: cap - len(examples)]:
            seen.add(i)
            changes = _changes(preprocessor, x[i].numpy(), x_adv[i].numpy()) if preprocessor is not None else []
            examples.append(Example(int(rows[i]), attack, radius, int(y[i]), int(clean_pred[i]), int(after[i]),
                                    x[i].numpy(), x_adv[i].numpy(), changes))
    return examples


def _changes(preprocessor, x: np.ndarray, x_adv: np.ndarray) -> list[tuple[str, object, object]]:
    """The features an adversarial row changed, in original units."""
    changes = []
    for feature in preprocessor.spec.features:
        if feature.kind != "numeric":
            continue
        (column,) = preprocessor.feature_groups[feature.name]
        if abs(x_adv[column] - x[column]) < 1e-6:
            continue
        scale, mean = preprocessor.scales_[feature.name], preprocessor.means_[feature.name]
        before, after = x[column] * scale + mean, x_adv[column] * scale + mean
        if feature.integer:
            before, after = int(round(before)), int(round(after))
        else:
            before, after = round(float(before), 4), round(float(after), 4)
        changes.append((feature.name, before, after))
    return changes


def _ood(detector: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, flipped: np.ndarray, radius: float,
         attack: str, device: torch.device) -> dict:
    """How well the detector's reconstruction error tells the successful adversarial rows
    from the clean ones."""
    from sklearn.metrics import roc_auc_score

    from scrutiny.models import reconstruction_error

    detector = detector.to(device)
    clean = reconstruction_error(detector, x.to(device)).cpu().numpy()
    adv = reconstruction_error(detector, x_adv.to(device)).cpu().numpy()
    detector.cpu()
    adv = adv[flipped]
    threshold = float(np.quantile(clean, 0.95))
    labels = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    auroc = float(roc_auc_score(labels, np.r_[clean, adv])) if len(adv) else float("nan")
    return {"attack": attack, "eps": radius, "clean_error": float(np.median(clean)),
            "adversarial_error": float(np.median(adv)) if len(adv) else float("nan"), "auroc": auroc,
            "detected_at_5pct_fpr": float(np.mean(adv > threshold)) if len(adv) else float("nan"),
            "n_adversarial": int(len(adv))}
