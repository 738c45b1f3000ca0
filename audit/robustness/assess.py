"""The robustness family: attack a model on a sample of the test split, over a grid of ε.

:func:`assess_robustness` runs each attack of :mod:`.attacks` at each ε on the same seeded
rows and reports clean accuracy, robust accuracy and attack success rate (per attack, and
the per-row worst case over all attacks), each row's smallest ε that flips it (binary search
with PGD), a capped set of adversarial examples, an out-of-distribution score of the
adversarial inputs under an autoencoder, and warnings when the evaluation looks weak.

The attacked rows are cut into chunks of ``chunk_rows``
(:func:`~scrutiny.audit.run.executor.row_chunks`). Each attack at each radius, and the whole
smallest-ε search, runs chunk by chunk through an :class:`~scrutiny.audit.run.executor.Executor`
with the chunk's own seed (:meth:`~scrutiny.audit.run.executor.Chunk.seed`: the keys
``("robustness", attack, radius index)`` or ``("robustness", "smallest_eps")`` and the chunk's
index), and the chunks' results are merged in chunk order: the result depends on the seed and
``chunk_rows``, never on where, or in which order, the chunks ran.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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
from scrutiny.audit.run.executor import CHUNK_ROWS, Chunk, Executor, LocalExecutor, row_chunks, work_chunks
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
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    gradient_model: nn.Module | None = None,
    executor: Executor | None = None,
    chunk_rows: int = CHUNK_ROWS,
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
        seed: seeds the row sample and, with each chunk's index, every attack.
        device: where to attack: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Default: CUDA when present.
        gradient_model: the model white-box attacks differentiate, for a ``model`` without gradients
            (an ONNX file) whose PyTorch twin gives the same outputs; the adversarial inputs are
            then judged by ``model`` itself. Default: ``model``.
        executor: where the chunks of work run. Default: a
            :class:`~scrutiny.audit.run.executor.LocalExecutor`, one after another in this process.
            It cannot change the result.
        chunk_rows: rows per chunk: the unit of work, and the rows of one forward pass. With
            ``seed`` it fixes every random draw, so another value may give other (equally valid)
            figures. Default: :data:`~scrutiny.audit.run.executor.CHUNK_ROWS`.

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
                        ("seed", seed), ("chunk_rows", chunk_rows)):
        check_int(name, value)
    constraints = constraints_for(dataset, preprocessor, immutable=immutable, mutable=mutable)
    dev = resolve_device(device)
    preprocessor = preprocessor or dataset.preprocessor
    rows, x_all, y_all = _sample(dataset, preprocessor, samples, seed)
    executor = executor if executor is not None else LocalExecutor()
    chunks = row_chunks(len(rows), chunk_rows)
    # very large in either norm: the L∞ radius, or the L2 norm of that radius on every position
    search = modality(task).search_eps * (1 if norm == "linf" else float(np.sqrt(x_all[0].numel())))
    setup = _Setup(norm=norm, constraints=constraints, eps=eps, steps=steps, restarts=restarts, queries=queries,
                   seed=seed, device=str(dev), threads=torch.get_num_threads(), search_eps=search,
                   search_steps=search_steps, search_pgd_steps=max(steps // 2, 10))
    was_training = model.training
    twin = None if gradient_model is None else gradient_model.to(dev).eval()
    model.to(dev).eval()
    try:
        clean_pred = _predict_chunks(model, x_all, chunks, dev)
        correct = clean_pred == y_all
        clean_acc = float(correct.float().mean())
        # every unit of work in one map, so that the models and rows go to Ray's object store once
        units = [chunk for name in attacks for k in range(len(eps))
                 for chunk in work_chunks(("robustness", name, k), len(rows), chunk_rows)]
        units += work_chunks(("robustness", SEARCH), len(rows), chunk_rows) if search_steps else []
        with _progress(progress, len(units)) as bar:
            done = executor.map(_unit, units, model, twin, x_all, y_all, correct, setup, progress=bar)
        robust, adversarial, predictions, stats, seconds = _merge_grid(
            [part for part in done if isinstance(part, _Attacked)], attacks, eps, len(chunks), y_all, correct)
        if search_steps:
            min_eps, large_acc, search_stats, seconds["smallest_eps"] = _merge_search(
                [part for part in done if isinstance(part, _Searched)], correct)
            stats = stats + search_stats
        else:
            min_eps, large_acc, seconds["smallest_eps"] = np.full(len(rows), np.nan), float("nan"), 0.0
        robust["worst case"] = np.logical_and.reduce([robust[a] for a in attacks])
        curve = _curve(robust, eps, clean_acc, correct.numpy(), len(rows))
        gradient = {"zero": stats.zero_gradient, "nonfinite": stats.nonfinite_gradient}
        warnings = _weak_evaluation(robust, eps, attacks, gradient, large_acc, search, clean_acc,
                                    tabular=task != "image", n=len(rows))
        primary = primary_attack(attacks)
        examples = _examples(adversarial, predictions, primary, eps, x_all, y_all, clean_pred, rows, max_examples,
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
                  "model_rows": stats.model_rows, "samples": len(rows), "chunk_rows": chunk_rows},
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


@dataclass(frozen=True)
class _Setup:
    """Everything a unit of work needs besides the models and the rows: shipped to the workers once."""

    norm: str
    constraints: Constraints
    eps: tuple[float, ...]
    steps: int
    restarts: int
    queries: int
    seed: int
    device: str
    threads: int             # the driver's torch CPU threads, which every unit uses
    search_eps: float        # the smallest-eps search: its top radius,
    search_steps: int        # bisection steps
    search_pgd_steps: int    # and PGD steps

    def attack(self, name: str, model: nn.Module, twin: nn.Module | None, x: torch.Tensor, y: torch.Tensor, radius,
               seed: int, stats: AttackStats, steps: int | None = None) -> torch.Tensor:
        """``name`` on rows already on the device; ``steps`` overrides PGD's. A white-box attack
        differentiates the twin when there is one (a model without gradients), else the model."""
        attacked = twin if name in WHITE_BOX and twin is not None else model
        return run_attack(name, attacked, x, y, radius, norm=self.norm, constraints=self.constraints,
                          steps=self.steps if steps is None else steps, restarts=self.restarts, queries=self.queries,
                          seed=seed, stats=stats)


@contextmanager
def _threads(count: int) -> Iterator[None]:
    """Torch's CPU threads set to ``count`` (the driver's) for the block: a float32 reduction split
    over another number of threads may differ in its last bits, and a Ray worker has its own count."""
    before = torch.get_num_threads()
    if before != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _predict_chunks(model: nn.Module, x: torch.Tensor, chunks: list[slice], device: torch.device) -> torch.Tensor:
    """The model's classes for ``x``, one chunk per forward pass (as the units predict); on the CPU."""
    return torch.cat([_predict(model, x[rows].to(device)).cpu() for rows in chunks])


SEARCH = "smallest_eps"  # the smallest-eps search's name among the units of work


class _Attacked(NamedTuple):
    """What one attack at one radius gives on one chunk."""

    x_adv: torch.Tensor    # the adversarial rows, on the CPU
    after: torch.Tensor    # the model's classes for them
    stats: AttackStats
    seconds: float


class _Searched(NamedTuple):
    """What the smallest-ε search gives on one chunk."""

    min_eps: np.ndarray    # per row: the smallest radius found, 0 (wrong already) or inf (never flipped)
    flipped: np.ndarray    # per row: PGD at the top radius flipped it
    stats: AttackStats
    seconds: float


def _unit(chunk: Chunk, model: nn.Module, twin: nn.Module | None, x: torch.Tensor,
          y: torch.Tensor, correct: torch.Tensor, setup: _Setup) -> _Attacked | _Searched:
    """One unit of work on one chunk of rows, with the driver's torch threads: the attack
    ``chunk.work[1]`` at the radius ``chunk.work[2]`` (its index), or (:data:`SEARCH`) the whole
    smallest-ε search."""
    rows, seed = chunk.rows, chunk.seed(setup.seed)
    with _threads(setup.threads):
        start = time.perf_counter()
        dev = torch.device(setup.device)
        xb, yb, stats = x[rows].to(dev), y[rows].to(dev), AttackStats()
        if chunk.work == ("robustness", SEARCH):
            min_eps, flipped = _search(model, twin, xb, yb, correct[rows].to(dev), setup, stats, seed=seed)
            return _Searched(min_eps, flipped, stats, time.perf_counter() - start)
        name, k = str(chunk.work[1]), int(chunk.work[2])
        x_adv = setup.attack(name, model, twin, xb, yb, setup.eps[k], seed, stats)
        return _Attacked(x_adv.cpu(), _predict(model, x_adv).cpu(), stats, time.perf_counter() - start)


def _merge_grid(parts: list[_Attacked], attacks, eps, n_chunks: int, y: torch.Tensor, correct: torch.Tensor):
    """The attack units' results, in (attack, radius, chunk) order, merged. Returns, per attack,
    which rows stay right at each ε ((n_eps, N) bool); per (attack, ε) the adversarial inputs and
    the model's classes for them; the attacks' statistics; the seconds of work of each attack."""
    robust: dict[str, np.ndarray] = {}
    adversarial: dict[tuple[str, float], torch.Tensor] = {}
    predictions: dict[tuple[str, float], torch.Tensor] = {}
    seconds: dict[str, float] = {}
    stats = AttackStats()
    done = iter(parts)
    for name in attacks:
        flags, seconds[name] = [], 0.0
        for radius in eps:
            chunks = [next(done) for _ in range(n_chunks)]
            adversarial[name, radius] = torch.cat([c.x_adv for c in chunks])
            predictions[name, radius] = torch.cat([c.after for c in chunks])
            for chunk in chunks:
                stats = stats + chunk.stats
                seconds[name] += chunk.seconds
            flags.append((predictions[name, radius] == y).numpy() & correct.numpy())
        robust[name] = np.array(flags)
    return robust, adversarial, predictions, stats, seconds


def _curve(robust: dict[str, np.ndarray], eps, clean_acc: float, correct: np.ndarray, n: int) -> list[CurveEntry]:
    return [
        CurveEntry(name, radius, clean_acc, float(flags[k].mean()),
                   float(1 - flags[k][correct].mean()) if correct.any() else 0.0, n)
        for name, flags in robust.items() for k, radius in enumerate(eps)
    ]


class _progress:
    """A bar over the chunks of work, each counted when it finishes, wherever it ran: the
    executor's ``progress`` callback."""

    def __init__(self, show: bool, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="attacks", unit="chunk", disable=not show)

    def __enter__(self):
        def shown(done: int, total: int) -> None:
            self.bar.update(done - self.bar.n)

        return shown

    def __exit__(self, *exc):
        self.bar.close()


def _search(model: nn.Module, twin: nn.Module | None, x: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
            setup: _Setup, stats: AttackStats, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bisection per row on [0, top], every PGD run seeded ``seed``: the smallest radius at which
    PGD flips each row (rows the model gets wrong already: 0; rows PGD cannot flip even at the top:
    inf), and which rows PGD flips at the top."""

    def flips(idx: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        x_adv = setup.attack("pgd", model, twin, x[idx], y[idx], radii, seed, stats, setup.search_pgd_steps)
        return _predict(model, x_adv) != y[idx]

    n = len(x)
    top = torch.full((n,), setup.search_eps, device=x.device)
    flipped = flips(torch.arange(n, device=x.device), top)
    low, high = torch.zeros(n, device=x.device), top.clone()
    search = correct & flipped
    for _ in range(setup.search_steps):
        idx = search.nonzero().squeeze(1)
        if not len(idx):
            break
        mid = (low[idx] + high[idx]) / 2
        hit = flips(idx, mid)
        high[idx[hit]] = mid[hit]
        low[idx[~hit]] = mid[~hit]
    result = torch.where(search, high, torch.full((n,), torch.inf, device=x.device))
    result[~correct] = 0.0
    return result.cpu().numpy(), flipped.cpu().numpy()


def _merge_search(parts: list[_Searched], correct: torch.Tensor) -> tuple[np.ndarray, float, AttackStats, float]:
    """The search units' results, in chunk order, merged: each row's radius, the accuracy under PGD
    at the top radius, the search's attack statistics and its seconds of work."""
    flipped = np.concatenate([p.flipped for p in parts])
    stats = AttackStats()
    for part in parts:
        stats = stats + part.stats
    large_acc = float(np.mean(~flipped & correct.numpy()))
    return np.concatenate([p.min_eps for p in parts]), large_acc, stats, sum(p.seconds for p in parts)


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


def _examples(adversarial, predictions, attack, eps, x, y, clean_pred, rows, cap, preprocessor) -> list[Example]:
    """Up to ``cap`` flipped rows of ``attack``, spread over the ε grid, smallest ε first."""
    examples: list[Example] = []
    seen: set[int] = set()
    per_eps = max(1, -(-cap // len(eps)))
    for radius in eps:
        x_adv, after = adversarial[attack, radius], predictions[attack, radius]
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
