"""The robustness family: attack a model on a sample of the test split, over a grid of ε.

:func:`assess_robustness` runs each attack of :mod:`.attacks` at each ε on the same seeded
rows and reports clean accuracy, robust accuracy and attack success rate (per attack, and
the per-row worst case over all attacks), each row's smallest ε that flips it (binary search
with PGD), a capped set of adversarial examples, an out-of-distribution score of the
adversarial inputs under an autoencoder, and warnings when the evaluation looks weak.

The members of AutoAttack's ensemble (:data:`~scrutiny.audit.robustness.registry.ENSEMBLE`:
APGD-CE, APGD-T, Square) that an evaluation names run as a chain, AutoAttack's way: at each
radius the first attacks every row, each later one only the rows the earlier ones left standing
(cheaper; each row's worst case is the ensemble's). Every other attack (PGD, FGSM, the noise
baselines) runs on every row. A row is robust at a radius only if every attack failed on it
(the worst case); the details record per radius how many rows each attack broke that the ones
before it left (:class:`~scrutiny.audit.robustness.details.ContributionEntry`).

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
    apgd,
    image_constraints,
    run_attack,
    tabular_constraints,
)
from scrutiny.audit.robustness.details import ContributionEntry, CurveEntry
from scrutiny.audit.robustness.registry import (
    ATTACKS,
    DEFAULT_ATTACKS,
    DEFAULT_QUERIES,
    DEFAULT_STEPS,
    NORMS,
    WHITE_BOX,
    chain_of,
    in_run_order,
    parse_attacks,
    primary_attack,
)
from scrutiny.audit.run.executor import CHUNK_ROWS, Chunk, Executor, LocalExecutor, chunk_seed, row_chunks, work_chunks
from scrutiny.devices import resolve_device
from scrutiny.errors import InputError
from scrutiny.limits import check_int
from scrutiny.modality import MODALITIES, modality
from scrutiny.models import Dataset

__all__ = ["ATTACKS", "DEFAULT_EPS", "APGD_T_TARGETS", "CHAIN_SHARE", "IMPROVING_SHARE", "Example", "Robustness",
           "assess_robustness", "constraints_for", "fit_detector", "parse_attacks"]

DEFAULT_EPS = {name: m.default_eps for name, m in MODALITIES.items()}

APGD_T_TARGETS = 3
"""APGD-T's target classes in an evaluation: the three most likely wrong classes of each row, as
in AutoAttack's cheaper versions (its standard one takes nine). A model with fewer classes has
fewer: one on a binary model, where the targeted DLR loss is the plain logit margin."""

CHAIN_SHARE = 0.02
"""A later attack of the chain that breaks more than this share of the rows the earlier ones left
standing (and more than :data:`SLACK_ROWS` rows) is a sign that they have not converged."""

IMPROVING_SHARE = 0.05
"""An APGD run whose best loss still rose at its last checkpoint for more than this share of the
rows it left unbroken (and more than :data:`SLACK_ROWS` rows) has not converged: more steps would
likely break more."""

SLACK_ROWS = 2
"""Rows below which no weak-evaluation sign counts a share: two rows may be chance."""


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
    robust: dict[str, np.ndarray]            # attack -> (n_eps, N) bool: still right under that attack (a later
                                             # member of the chain: under it and every attack before it in the chain)
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

    contributions: list[ContributionEntry] = field(default_factory=list)

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
SEARCH_PGD_STEPS = 20
"""The most PGD steps of each of the search's runs: it runs PGD once per bisection step, so with the
APGD ensemble's 100 steps it would cost more than the ensemble; 20 is what it had at PGD's 40."""


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
    steps: int = DEFAULT_STEPS,
    restarts: int = 1,
    queries: int = DEFAULT_QUERIES,
    search_steps: int = SEARCH_STEPS,
    detector: nn.Module | None = None,
    max_examples: int = 16,
    examples_per_point: int | None = None,
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
            (:data:`~scrutiny.audit.robustness.registry.DEFAULT_ATTACKS`). Two or more members of
            :data:`~scrutiny.audit.robustness.registry.ENSEMBLE` run as its chain (see the module).
        eps: radii (L∞ or L2; tables: training standard deviations). Default: the modality's
            ``default_eps``.
        norm: ``"linf"`` or ``"l2"``.
        immutable, mutable: table features to hold, or to free from the default holds
            (protected attributes and the data set's ``immutable`` columns).
        steps, restarts: PGD's and APGD's iterations and random restarts (APGD-T: per target
            class, the :data:`APGD_T_TARGETS` most likely wrong ones).
        queries: Square attack queries per row.
        search_steps: bisection steps of the smallest-ε search (PGD with ``steps // 2`` steps, at
            least 10 and at most :data:`SEARCH_PGD_STEPS`);
            0 leaves the search out (its radii and accuracy NaN).
        detector: an autoencoder for the out-of-distribution score; None skips the score.
        max_examples: adversarial examples kept for reports, from the primary attack (or the chain),
            spread over the ε grid; unused when ``examples_per_point`` is given.
        examples_per_point: keep up to this many adversarial examples per attack and ε, from every
            attack (a member of the chain: the rows it broke), ordered by attack (as run) then ε:
            what the audit keeps, so that each attack's examples can be shown at each radius.
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
    attacks = in_run_order(parse_attacks(list(attacks)))
    task = dataset.spec.task
    eps = _checked_eps(eps, norm, task)
    for name, value in (("samples", samples), ("steps", steps), ("restarts", restarts), ("queries", queries),
                        ("seed", seed), ("chunk_rows", chunk_rows)):
        check_int(name, value)
    if examples_per_point is not None:
        check_int("examples_per_point", examples_per_point, limit="samples")
    constraints = constraints_for(dataset, preprocessor, immutable=immutable, mutable=mutable)
    dev = resolve_device(device)
    preprocessor = preprocessor or dataset.preprocessor
    rows, x_all, y_all = _sample(dataset, preprocessor, samples, seed)
    executor = executor if executor is not None else LocalExecutor()
    chunks = row_chunks(len(rows), chunk_rows)
    # very large in either norm: the L∞ radius, or the L2 norm of that radius on every position
    search = modality(task).search_eps * (1 if norm == "linf" else float(np.sqrt(x_all[0].numel())))
    chain: tuple[str, ...] = chain_of(attacks) if len(chain_of(attacks)) > 1 else ()
    setup = _Setup(norm=norm, constraints=constraints, eps=eps, steps=steps, restarts=restarts, queries=queries,
                   seed=seed, device=str(dev), threads=torch.get_num_threads(), search_eps=search,
                   search_steps=search_steps, search_pgd_steps=min(max(steps // 2, 10), SEARCH_PGD_STEPS), chain=chain)
    was_training = model.training
    twin = None if gradient_model is None else gradient_model.to(dev).eval()
    model.to(dev).eval()
    try:
        clean_pred = _predict_chunks(model, x_all, chunks, dev)
        correct = clean_pred == y_all
        clean_acc = float(correct.float().mean())
        # every unit of work in one map, so that the models and rows go to Ray's object store once
        units = [chunk for work in _grid_work(attacks, chain) for k in range(len(eps))
                 for chunk in work_chunks(("robustness", work, k), len(rows), chunk_rows)]
        units += work_chunks(("robustness", SEARCH), len(rows), chunk_rows) if search_steps else []
        with _progress(progress, len(units)) as bar:
            done = executor.map(_unit, units, model, twin, x_all, y_all, correct, setup, progress=bar)
        grid = _merge_grid([part for part in done if not isinstance(part, _Searched)], attacks, chain, eps,
                           len(chunks), y_all, correct)
        robust, seconds, stats = grid.robust, grid.seconds, grid.total_stats()
        if search_steps:
            min_eps, large_acc, search_stats, seconds["smallest_eps"] = _merge_search(
                [part for part in done if isinstance(part, _Searched)], correct)
            stats = stats + search_stats
        else:
            min_eps, large_acc, seconds["smallest_eps"] = np.full(len(rows), np.nan), float("nan"), 0.0
        robust["worst case"] = np.logical_and.reduce([robust[a] for a in attacks])
        curve = _curve(robust, eps, clean_acc, correct.numpy(), len(rows))
        contributions = _contributions(robust, attacks, chain, eps, correct.numpy())
        gradient = {"zero": stats.zero_gradient, "nonfinite": stats.nonfinite_gradient}
        warnings = _weak_evaluation(robust, eps, attacks, gradient, large_acc, search, clean_acc,
                                    tabular=task != "image", n=len(rows), chain=chain, contributions=contributions,
                                    stats=grid.stats)
        primary = primary_attack(attacks)
        shown = ENSEMBLE_LABEL.join(chain) if primary in chain else primary
        tabular = preprocessor if task != "image" else None
        if examples_per_point is None:
            examples = _examples(grid, shown, eps, x_all, y_all, clean_pred, rows, max_examples, tabular)
        else:
            examples = _examples_per_point(grid, attacks, chain, eps, x_all, y_all, clean_pred, rows,
                                           examples_per_point, tabular)
        ood = None
        if detector is not None:
            start = time.perf_counter()
            broken = correct.numpy() & ~robust[primary if shown == primary else chain[-1]]
            ood = [_ood(detector, x_all, grid.adversarial[shown, radius], broken[k], radius, shown, dev)
                   for k, radius in enumerate(eps)]
            seconds["ood"] = time.perf_counter() - start
    finally:
        model.train(was_training)
    settings = {"steps": steps, "restarts": restarts, "queries": queries, "search_steps": search_steps,
                "search_pgd_steps": setup.search_pgd_steps,
                "seed": seed, "device": str(dev),
                "model_rows": stats.model_rows, "samples": len(rows), "chunk_rows": chunk_rows}
    if "pgd" in attacks or search_steps:  # the smallest-eps search runs PGD too
        settings["pgd_loss"], settings["pgd_schedule"] = "cross-entropy", "cosine"
    if "apgd-t" in attacks:
        settings["apgd_t_targets"] = APGD_T_TARGETS
        # the DLR loss scales by the gap to the third class: with two classes it is the plain logit margin
        settings["apgd_t_loss"] = "targeted DLR" if len(dataset.spec.classes) >= 3 else "logit margin"
    if chain:
        settings["chain"] = ENSEMBLE_LABEL.join(chain)
    return Robustness(
        rows=rows, norm=norm, eps=eps, attacks=tuple(attacks), curve=curve, robust=robust, min_eps=min_eps,
        search_eps=search, large_eps_accuracy=large_acc, examples=examples, constraints=constraints.applied,
        warnings=warnings, gradient=gradient, ood=ood, settings=settings, seconds=seconds,
        contributions=contributions,
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
    chain: tuple[str, ...]   # the members of the ensemble that run as a chain (none: fewer than two)

    def attack(self, name: str, model: nn.Module, twin: nn.Module | None, x: torch.Tensor, y: torch.Tensor, radius,
               seed: int, stats: AttackStats, steps: int | None = None) -> torch.Tensor:
        """``name`` on rows already on the device; ``steps`` overrides PGD's. A white-box attack
        differentiates the twin when there is one (a model without gradients), else the model.
        APGD-T aims at the :data:`APGD_T_TARGETS` most likely wrong classes."""
        attacked = twin if name in WHITE_BOX and twin is not None else model
        steps = self.steps if steps is None else steps
        if name == "apgd-t":
            return apgd(attacked, x, y, radius, norm=self.norm, constraints=self.constraints, steps=steps,
                        restarts=self.restarts, loss="dlr-targeted", target_classes=APGD_T_TARGETS, seed=seed,
                        stats=stats)
        return run_attack(name, attacked, x, y, radius, norm=self.norm, constraints=self.constraints, steps=steps,
                          restarts=self.restarts, queries=self.queries, seed=seed, stats=stats)


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
CHAIN = "ensemble"       # the chain's name among the units of work (its members' seeds are their own)
ENSEMBLE_LABEL = " → "   # joins the chain's members where the ensemble is named as one attack


def _grid_work(attacks: Sequence[str], chain: tuple[str, ...]) -> list[str]:
    """The attack grid's pieces of work, in the order of ``attacks``: each attack outside the chain,
    and the chain (:data:`CHAIN`) where its first member is listed."""
    return [CHAIN if a == chain[0] else a for a in attacks if a not in chain[1:]] if chain else list(attacks)


class _Attacked(NamedTuple):
    """What one attack at one radius gives on one chunk."""

    x_adv: torch.Tensor    # the adversarial rows, on the CPU
    after: torch.Tensor    # the model's classes for them
    stats: AttackStats
    seconds: float


class _Chained(NamedTuple):
    """What the chain at one radius gives on one chunk: per member, in the chain's order, its
    :class:`_Attacked`, whose rows are the chain's so far (a row the member did not attack, broken
    before it, keeps the input and class an earlier member left)."""

    members: tuple[_Attacked, ...]


class _Searched(NamedTuple):
    """What the smallest-ε search gives on one chunk."""

    min_eps: np.ndarray    # per row: the smallest radius found, 0 (wrong already) or inf (never flipped)
    flipped: np.ndarray    # per row: PGD at the top radius flipped it
    stats: AttackStats
    seconds: float


def _unit(chunk: Chunk, model: nn.Module, twin: nn.Module | None, x: torch.Tensor,
          y: torch.Tensor, correct: torch.Tensor, setup: _Setup) -> _Attacked | _Chained | _Searched:
    """One unit of work on one chunk of rows, with the driver's torch threads: the attack
    ``chunk.work[1]`` at the radius ``chunk.work[2]`` (its index), the chain (:data:`CHAIN`) at that
    radius, or (:data:`SEARCH`) the whole smallest-ε search."""
    rows, seed = chunk.rows, chunk.seed(setup.seed)
    with _threads(setup.threads):
        start = time.perf_counter()
        dev = torch.device(setup.device)
        xb, yb, stats = x[rows].to(dev), y[rows].to(dev), AttackStats()
        if chunk.work == ("robustness", SEARCH):
            min_eps, flipped = _search(model, twin, xb, yb, correct[rows].to(dev), setup, stats, seed=seed)
            return _Searched(min_eps, flipped, stats, time.perf_counter() - start)
        name, k = str(chunk.work[1]), int(chunk.work[2])
        if name == CHAIN:
            return _chain(chunk, model, twin, xb, yb, correct[rows].to(dev), setup, k)
        x_adv = setup.attack(name, model, twin, xb, yb, setup.eps[k], seed, stats)
        return _Attacked(x_adv.cpu(), _predict(model, x_adv).cpu(), stats, time.perf_counter() - start)


def _chain(chunk: Chunk, model: nn.Module, twin: nn.Module | None, x: torch.Tensor, y: torch.Tensor,
           correct: torch.Tensor, setup: _Setup, k: int) -> _Chained:
    """The chain at radius ``setup.eps[k]`` on one chunk: its first member attacks every row (as it
    would alone), each later one the rows still standing (right before the attack, and no earlier
    member broke them), if any. Each member draws from its own seed, the one it would have alone:
    ``chunk_seed(seed, "robustness", member, k, chunk index)``."""
    members: list[_Attacked] = []
    standing = correct.clone()
    x_adv, after = x, y
    for j, name in enumerate(setup.chain):
        start, stats = time.perf_counter(), AttackStats()
        seed = chunk_seed(setup.seed, "robustness", name, k, chunk.index)
        if j == 0:
            x_adv = setup.attack(name, model, twin, x, y, setup.eps[k], seed, stats)
            after = _predict(model, x_adv)
        else:
            idx = standing.nonzero().squeeze(1)
            x_adv, after = x_adv.clone(), after.clone()
            if len(idx):
                found = setup.attack(name, model, twin, x[idx], y[idx], setup.eps[k], seed, stats)
                x_adv[idx], after[idx] = found, _predict(model, found)
        standing &= after == y
        members.append(_Attacked(x_adv.cpu(), after.cpu(), stats, time.perf_counter() - start))
    return _Chained(tuple(members))


@dataclass
class _Grid:
    """The attack grid's results, merged over the chunks.

    ``robust``: per attack, which rows stay right at each ε ((n_eps, N) bool; a later member of the
    chain: under it and every member before it). ``adversarial`` and ``predictions``: per
    (attack, ε), the adversarial inputs and the model's classes for them, and per (the chain's
    label, ε) the chain's, each row's from the member that broke it, or the last. ``broken_by``: per
    (the chain's label, ε), the member that broke each row ("" where none did). ``stats``: per
    (attack, ε), the attack's statistics. ``seconds``: per attack, its seconds of work.
    """

    robust: dict[str, np.ndarray] = field(default_factory=dict)
    adversarial: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)
    predictions: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)
    broken_by: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    stats: dict[tuple[str, float], AttackStats] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def total_stats(self) -> AttackStats:
        total = AttackStats()
        for part in self.stats.values():
            total = total + part
        return total


def _merge_grid(parts: list[_Attacked | _Chained], attacks: Sequence[str], chain: tuple[str, ...], eps,
                n_chunks: int, y: torch.Tensor, correct: torch.Tensor) -> _Grid:
    """The attack units' results, in (piece of work, radius, chunk) order (:func:`_grid_work`), merged."""
    grid = _Grid()
    done = iter(parts)
    right = correct.numpy()
    for work in _grid_work(attacks, chain):
        members = chain if work == CHAIN else (work,)
        flags: dict[str, list[np.ndarray]] = {name: [] for name in members}
        for name in members:
            grid.seconds[name] = 0.0
        for radius in eps:
            chunks = [next(done) for _ in range(n_chunks)]
            per_member = [[c.members[j] if isinstance(c, _Chained) else c for c in chunks] for j in range(len(members))]
            for name, pieces in zip(members, per_member):
                grid.adversarial[name, radius] = torch.cat([c.x_adv for c in pieces])
                grid.predictions[name, radius] = torch.cat([c.after for c in pieces])
                grid.stats[name, radius] = AttackStats()
                for piece in pieces:
                    grid.stats[name, radius] = grid.stats[name, radius] + piece.stats
                    grid.seconds[name] += piece.seconds
                flags[name].append((grid.predictions[name, radius] == y).numpy() & right)
            if work == CHAIN:
                label, last = ENSEMBLE_LABEL.join(chain), chain[-1]
                grid.adversarial[label, radius] = grid.adversarial[last, radius]
                grid.predictions[label, radius] = grid.predictions[last, radius]
                by = np.full(len(right), "", dtype=object)
                standing = right.copy()
                for name in chain:
                    now = flags[name][-1]
                    by[standing & ~now] = name
                    standing = now
                grid.broken_by[label, radius] = by
        for name in members:
            grid.robust[name] = np.array(flags[name])
    return grid


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


def _contributions(robust: dict[str, np.ndarray], attacks: Sequence[str], chain: tuple[str, ...], eps,
                   correct: np.ndarray) -> list[ContributionEntry]:
    """Per radius, the rows each attack broke that the attacks before it left standing: the chain's
    members in its order, then every other attack in the listed order. They add up to the rows the
    model gets right less those the worst case leaves."""
    order = [*chain, *(a for a in attacks if a not in chain)]
    entries = []
    for k, radius in enumerate(eps):
        standing = correct.copy()
        for name in order:
            survived = standing & robust[name][k]
            entries.append(ContributionEntry(attack=name, eps=float(radius), chained=name in chain[1:],
                                             attacked=int(standing.sum()), broken=int((standing & ~survived).sum())))
            standing = survived
    return entries


def _weak_evaluation(robust, eps, attacks, gradient, large_acc, search, clean_acc, *, tabular: bool, n: int,
                     chain: tuple[str, ...] = (), contributions: Sequence[ContributionEntry] = (),
                     stats: dict[tuple[str, float], AttackStats] | None = None) -> list[str]:
    """Signs that the evaluation is weak, one line each."""
    slack = max(0.02, 2.0 / n)  # two rows, or two points
    warnings = []
    for name in attacks:
        acc = robust[name].mean(axis=1)
        rises = [(eps[k], eps[k + 1]) for k in range(len(eps) - 1) if acc[k + 1] > acc[k] + slack]
        if rises:
            a, b = rises[0]
            warnings.append(f"{name}: robust accuracy rises from eps={a:g} to eps={b:g} "
                            f"({acc[eps.index(a)]:.1%} -> {acc[eps.index(b)]:.1%}); a working attack only gets stronger with eps")
    warnings += _worst_case_rises(robust["worst case"], eps) if "worst case" in robust else []
    warnings += _late_breaks(chain, contributions)
    warnings += _still_improving(stats or {}, eps)
    white = [a for a in WHITE_BOX if a in attacks]
    if white:  # the strongest white-box attack at each eps against each gradient-free one run on every row
        best_white = np.min([robust[a].mean(axis=1) for a in white], axis=0)
        for other in (a for a in attacks if a not in WHITE_BOX and a not in chain[1:]):
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


def _worst_case_rises(worst: np.ndarray, eps) -> list[str]:
    """The worst case's robust accuracy rising from one radius to the next, by any row: a ball holds
    every smaller one, so the attacks missed, at the larger radius, points as good as they found."""
    counts = worst.sum(axis=1)
    n = worst.shape[1]
    return [f"worst case: robust accuracy rises from eps={eps[k]:g} to eps={eps[k + 1]:g} "
            f"({counts[k]} -> {counts[k + 1]} of {n} rows, {counts[k] / n:.1%} -> {counts[k + 1] / n:.1%}); the larger "
            "ball holds the smaller, so the attacks fell short at the larger eps"
            for k in range(len(eps) - 1) if counts[k + 1] > counts[k]]


def _late_breaks(chain: tuple[str, ...], contributions: Sequence[ContributionEntry]) -> list[str]:
    """A later member of the chain breaking more than :data:`CHAIN_SHARE` of the rows the earlier
    ones left (and more than :data:`SLACK_ROWS`): they have not converged, or the gradients are masked."""
    warnings = []
    for entry in contributions:
        if not entry.chained or entry.broken <= max(CHAIN_SHARE * entry.attacked, SLACK_ROWS):
            continue
        before = chain[:chain.index(entry.attack)]
        warnings.append(f"{entry.attack} broke {entry.broken} of the {entry.attacked} rows {', '.join(before)} left "
                        f"standing at eps={entry.eps:g} ({entry.broken / entry.attacked:.1%}, over "
                        f"{CHAIN_SHARE:.0%}): the attacks before it have not converged (more steps or restarts), or "
                        "their gradients are masked")
    return warnings


def _still_improving(stats: dict[tuple[str, float], AttackStats], eps) -> list[str]:
    """APGD runs whose best loss still rose at the last checkpoint for more than
    :data:`IMPROVING_SHARE` of the rows they left unbroken (and more than :data:`SLACK_ROWS`)."""
    warnings = []
    for (name, radius), part in stats.items():
        if part.improving_rows <= max(IMPROVING_SHARE * part.checkpoint_rows, SLACK_ROWS):
            continue
        warnings.append(f"{name}: at eps={radius:g} the best loss still rose at the last checkpoint for "
                        f"{part.improving_rows} of the {part.checkpoint_rows} rows its runs left unbroken "
                        f"({part.still_improving:.1%}, over {IMPROVING_SHARE:.0%}): it has not converged, and "
                        "more steps would likely break more")
    return warnings


def _examples(grid: _Grid, attack: str, eps, x, y, clean_pred, rows, cap, preprocessor) -> list[Example]:
    """Up to ``cap`` rows flipped by ``attack`` (an attack, or the chain's label: each row named by
    the member that broke it), spread over the ε grid, smallest ε first."""
    examples: list[Example] = []
    seen: set[int] = set()
    per_eps = max(1, -(-cap // len(eps)))
    for radius in eps:
        x_adv, after = grid.adversarial[attack, radius], grid.predictions[attack, radius]
        by = grid.broken_by.get((attack, radius))
        flipped = ((after != y) & (clean_pred == y)).nonzero().squeeze(1).tolist()
        taken = [i for i in flipped if i not in seen][:per_eps]
        for i in taken[: cap - len(examples)]:
            seen.add(i)
            changes = _changes(preprocessor, x[i].numpy(), x_adv[i].numpy()) if preprocessor is not None else []
            examples.append(Example(int(rows[i]), attack if by is None else str(by[i]), radius, int(y[i]),
                                    int(clean_pred[i]), int(after[i]), x[i].numpy(), x_adv[i].numpy(), changes))
    return examples


def _examples_per_point(grid: _Grid, attacks: Sequence[str], chain: tuple[str, ...], eps, x, y, clean_pred, rows,
                        per_point: int, preprocessor) -> list[Example]:
    """Up to ``per_point`` rows flipped by each attack at each ε (the first in sample order), by
    attack (in ``attacks``' order) then ε. An attack outside the chain: the rows it flipped that
    the model gets right, its own adversarial inputs; a member of the chain: the rows it broke (the
    earlier members left them standing), its inputs."""
    label = ENSEMBLE_LABEL.join(chain) if chain else ""
    right = (clean_pred == y).numpy()
    examples: list[Example] = []
    for attack in attacks:
        for radius in eps:
            x_adv, after = grid.adversarial[attack, radius], grid.predictions[attack, radius]
            if attack in chain:
                flipped = np.flatnonzero(grid.broken_by[label, radius] == attack)
            else:
                flipped = np.flatnonzero(right & (after != y).numpy())
            for i in flipped[:per_point].tolist():
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
