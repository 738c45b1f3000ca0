"""The default robustness evaluation is AutoAttack's ensemble (issue 17, items 1 and 2): APGD-CE, then
APGD-T on the rows still standing, then Square on the rows still standing, beside the Gaussian
baseline. The chain is recomputed here chunk by chunk with the seeds the layout names; each row's
worst case is the minimum over the attacks run, the recorded contributions add up to the drop in
robust accuracy, the three weak-evaluation signs the ensemble teaches (a later attack breaking what
the earlier ones left, a worst case rising with ε, APGD still improving at its last checkpoint) fire
on constructed cases and stay silent on a linear model, where the exact robust rows are known in
closed form, and the default digits and Adult audits give valid findings."""

from __future__ import annotations

import json
import re

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from scrutiny.audit.robustness import assess as assess_module
from scrutiny.audit.robustness.assess import (
    APGD_T_TARGETS,
    CHAIN_SHARE,
    IMPROVING_SHARE,
    assess_robustness,
    constraints_for,
)
from scrutiny.audit.robustness.attacks import AttackStats, apgd, run_attack
from scrutiny.audit.robustness.details import RobustnessDetails
from scrutiny.audit.robustness.registry import DEFAULT_ATTACKS, ENSEMBLE, chain_of, in_run_order
from scrutiny.audit.run.executor import LocalExecutor, chunk_seed, row_chunks
from scrutiny.audit.run.family import schema_path
from scrutiny.audit.run.findings import validate_findings

SEED = 5
EPS = (0.05, 0.1)
# 40 rows in chunks of 16 leave a last chunk of 8; few steps and queries, so that the later
# attacks of the chain have rows to break
SETTINGS = dict(eps=EPS, samples=40, steps=6, queries=80, search_steps=0, seed=SEED, device="cpu", chunk_rows=16)


@pytest.fixture(scope="module")
def digits(load):
    """The project's CNN on the digits, trained for five epochs (a few seconds)."""
    from scrutiny.models import train_on

    dataset = load("digits")
    return dataset, train_on(dataset, "cnn", epochs=5, progress=False).model.eval()


@pytest.fixture(scope="module")
def linear(load):
    """A linear classifier of the two breast-cancer classes, on the encoded table."""
    dataset = load("breast_cancer")
    X = torch.as_tensor(dataset.encode(dataset.train.X), dtype=torch.float32)
    y = torch.as_tensor(dataset.train.y, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Linear(X.shape[1], 2)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        optimiser.step()
    model.zero_grad(set_to_none=True)
    return dataset, model.eval()


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


def test_the_default_is_the_chain_in_autoattack_order_beside_the_noise_baseline():
    assert ENSEMBLE == ("apgd-ce", "apgd-t", "square")
    assert DEFAULT_ATTACKS == (*ENSEMBLE, "gaussian")
    assert chain_of(["gaussian", "square", "pgd", "apgd-ce"]) == ("apgd-ce", "square")
    # listed as given, the chain's members in the places its order gives them; the rest untouched
    assert in_run_order(["square", "pgd", "apgd-t", "gaussian", "apgd-ce"]) == ("apgd-ce", "pgd", "apgd-t", "gaussian",
                                                                                "square")
    assert in_run_order(["pgd", "square", "gaussian"]) == ("pgd", "square", "gaussian")
    from scrutiny.audit.run.config import load_config

    for task in ("image", "tabular"):
        config = load_config(None, task=task, fairness=False).robustness
        assert config.attacks == list(DEFAULT_ATTACKS) and config.steps == 100


def test_the_chain_runs_in_order_each_later_attack_on_the_rows_still_standing(digits, monkeypatch):
    """The chain recomputed by hand, chunk by chunk, with each member's own seed (run seed, family,
    attack, radius index, chunk index): APGD-CE on every row, APGD-T (the top classes) on the rows
    it left, Square on the rows both left; the Gaussian baseline on every row. The attacks the
    audit ran saw exactly those rows, in that order; the worst case is each row's minimum over
    the attacks; the contributions count what each broke and add up to the drop in accuracy."""
    dataset, model = digits
    calls: list[tuple[str, float, torch.Tensor]] = []
    original = assess_module._Setup.attack

    def recorded(self, name, model_, twin, x, y, radius, seed, stats, steps=None):
        calls.append((name, float(radius), x.clone()))
        return original(self, name, model_, twin, x, y, radius, seed, stats, steps)

    monkeypatch.setattr(assess_module._Setup, "attack", recorded)
    result = assess_robustness(model, dataset, attacks=("gaussian", "square", "apgd-t", "apgd-ce"), **SETTINGS)
    assert result.attacks == ("gaussian", "apgd-ce", "apgd-t", "square")  # the chain in its order, in its places

    x = torch.as_tensor(dataset.encode(dataset.test.X[result.rows]))
    y = torch.as_tensor(dataset.test.y[result.rows])
    box = constraints_for(dataset)
    right = predict(model, x) == y
    chunks = row_chunks(len(x), SETTINGS["chunk_rows"])
    assert [len(range(40)[c]) for c in chunks] == [16, 16, 8]
    steps, queries = SETTINGS["steps"], SETTINGS["queries"]
    flags = {name: np.zeros((len(EPS), len(x)), dtype=bool) for name in (*ENSEMBLE, "gaussian")}
    expected_calls = []
    for k, radius in enumerate(EPS):
        for c, rows in enumerate(chunks):
            xb, yb = x[rows], y[rows]
            standing = right[rows].clone()
            x_now = xb
            for name in ENSEMBLE:
                seed = chunk_seed(SEED, "robustness", name, k, c)
                idx = torch.arange(len(xb)) if name == "apgd-ce" else standing.nonzero().squeeze(1)
                if len(idx):
                    expected_calls.append((name, radius, xb[idx]))
                    if name == "apgd-t":
                        found = apgd(model, xb[idx], yb[idx], radius, constraints=box, steps=steps, loss="dlr-targeted",
                                     target_classes=APGD_T_TARGETS, seed=seed)
                    else:
                        found = run_attack(name, model, xb[idx], yb[idx], radius, constraints=box, steps=steps,
                                           queries=queries, seed=seed)
                    x_now = x_now.clone()
                    x_now[idx] = found
                standing = standing & (predict(model, x_now) == yb)
                flags[name][k, rows] = standing.numpy()
            noise = run_attack("gaussian", model, xb, yb, radius, constraints=box,
                               seed=chunk_seed(SEED, "robustness", "gaussian", k, c))
            flags["gaussian"][k, rows] = ((predict(model, noise) == yb) & right[rows]).numpy()
    chain_calls = [call for call in calls if call[0] in ENSEMBLE]
    assert [(n, r, len(v)) for n, r, v in chain_calls] == [(n, r, len(v)) for n, r, v in expected_calls]
    for (_, _, seen), (_, _, wanted) in zip(chain_calls, expected_calls):
        assert torch.equal(seen, wanted)  # the later attacks saw exactly the rows still standing
    # the later attacks had work to do, on fewer rows than the chunk
    later = [len(v) for n, _, v in expected_calls if n != "apgd-ce"]
    assert later and all(0 < size < 16 for size in later[:2])

    for name in (*ENSEMBLE, "gaussian"):
        assert np.array_equal(result.robust[name], flags[name]), name
    # each row's worst case: the minimum over the attacks run (a row counts robust only if every one failed)
    assert np.array_equal(result.robust["worst case"], np.minimum.reduce([flags[a] for a in flags]))
    for k, radius in enumerate(EPS):
        assert result.point("worst case", radius).robust_accuracy == (flags["square"][k] & flags["gaussian"][k]).mean()

    # contributions: the rows each attack broke that the ones before it left; they add up
    entries = {(e.attack, e.eps): e for e in result.contributions}
    assert len(entries) == 4 * len(EPS)
    n_right = int(right.sum())
    broke_any_later = 0
    for k, radius in enumerate(EPS):
        before = right.numpy()
        for name in (*ENSEMBLE, "gaussian"):
            after = before & flags[name][k]
            entry = entries[name, radius]
            assert (entry.attacked, entry.broken) == (int(before.sum()), int((before & ~after).sum())), (name, radius)
            assert entry.chained == (name in ENSEMBLE[1:])
            broke_any_later += entry.broken if name in ENSEMBLE[1:] else 0
            before = after
        drop = n_right - int(result.robust["worst case"][k].sum())
        assert sum(entries[name, radius].broken for name in (*ENSEMBLE, "gaussian")) == drop > 0
    assert broke_any_later > 0  # the later attacks added rows: their contributions are tested, not only zeros

    # the examples come from the ensemble, each named by the attack that broke its row
    assert result.examples
    for example in result.examples:
        i = int(np.searchsorted(result.rows, example.row))
        k = EPS.index(example.eps)
        breaker = next(a for a in ENSEMBLE if not flags[a][k, i])
        assert example.attack == breaker and example.after != example.before == example.label

    # the order the chunks run in cannot change the result
    again = assess_robustness(model, dataset, attacks=("gaussian", "square", "apgd-t", "apgd-ce"),
                              executor=LocalExecutor(order="reversed"), **SETTINGS)
    for name in result.robust:
        assert np.array_equal(again.robust[name], result.robust[name]), name
    assert again.contributions == result.contributions and again.warnings == result.warnings
    assert [e.x_adv.tobytes() for e in again.examples] == [e.x_adv.tobytes() for e in result.examples]


def exact_robust(model: nn.Linear, dataset, x: torch.Tensor, y: torch.Tensor, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """For a linear two-class model, the best L∞ attack inside the box is known: each coordinate
    moves by ε (or to its range bound) against the sign of its weight in the margin. Returns which
    rows stay right there, and the optimal margin."""
    box = constraints_for(dataset)
    lower = torch.minimum(torch.as_tensor(box.lower, dtype=torch.float64), x.double())
    upper = torch.maximum(torch.as_tensor(box.upper, dtype=torch.float64), x.double())
    w, b = model.weight.detach().double(), model.bias.detach().double()
    u = w[y] - w[1 - y]                                   # the margin's weights, per row
    margin = (x.double() * u).sum(dim=1) + b[y] - b[1 - y]
    down = torch.maximum(x.double() - radius, lower) - x.double()  # how far each coordinate may fall
    up = torch.minimum(x.double() + radius, upper) - x.double()    # and rise
    best = margin + torch.where(u > 0, u * down, u * up).sum(dim=1)
    return (best > 0).numpy(), best.numpy()


def test_a_linear_model_is_evaluated_exactly_and_no_sign_of_weakness_shows(linear):
    """On a linear two-class model APGD-CE's first step reaches the box's worst corner: the
    ensemble's robust rows are exactly those whose optimal margin stays positive, APGD-T and Square
    break nothing more, the curve falls with ε and APGD's loss has stopped rising."""
    dataset, model = linear
    eps = (0.1, 0.25, 0.5, 1.0)
    result = assess_robustness(model, dataset, eps=eps, samples=200, queries=200, search_steps=4, seed=SEED,
                               device="cpu")
    assert result.attacks == DEFAULT_ATTACKS and len(result.rows) == len(dataset.test.y)
    x = torch.as_tensor(dataset.encode(dataset.test.X.iloc[result.rows]))
    y = torch.as_tensor(np.asarray(dataset.test.y)[result.rows])
    right = (predict(model, x) == y).numpy()
    for k, radius in enumerate(eps):
        robust, best = exact_robust(model, dataset, x, y, radius)
        clear = np.abs(best) > 1e-4  # rows not on the boundary to float precision
        assert np.array_equal(result.robust["worst case"][k][clear], (robust & right)[clear]), radius
    worst = [result.point("worst case", e).robust_accuracy for e in eps]
    assert worst[0] > worst[-1] and all(a >= b for a, b in zip(worst, worst[1:]))
    later = [e for e in result.contributions if e.attack != "apgd-ce"]
    assert all(e.broken == 0 for e in later) and any(e.attacked > 0 for e in later)
    assert result.warnings == [], result.warnings


class Rounded(nn.Module):
    """Quantises its input before the model: the input gradient is zero everywhere, so the
    gradient attacks are blind and only Square can break rows."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


def test_square_breaking_what_apgd_left_is_a_sign_of_a_weak_evaluation(digits):
    dataset, model = digits
    result = assess_robustness(Rounded(model), dataset, eps=(0.1, 0.2), samples=40, steps=6, queries=150,
                               search_steps=0, seed=SEED, device="cpu")
    late = [w for w in result.warnings if " rows apgd-ce, apgd-t left standing " in w]
    square = {e.eps: e for e in result.contributions if e.attack == "square"}
    flagged = [e for e in square.values() if e.broken > max(CHAIN_SHARE * e.attacked, 2)]
    assert flagged and len(late) == len(flagged)
    for entry, line in zip(flagged, late):
        assert line.startswith(f"square broke {entry.broken} of the {entry.attacked} rows apgd-ce, apgd-t left "
                               f"standing at eps={entry.eps:g} ({entry.broken / entry.attacked:.1%}, over 2%)")
    assert any("gradients are all zero" in w for w in result.warnings)
    assert "\n" not in "".join(result.warnings)


def test_a_worst_case_that_rises_with_eps_is_a_sign_of_a_weak_evaluation(digits, linear, monkeypatch):
    """Stubbed: every attack gives up at the larger radius, so more rows stand there than at the smaller."""
    dataset, model = digits
    original = assess_module._Setup.attack

    def weak_at_large_eps(self, name, model_, twin, x, y, radius, seed, stats, steps=None):
        if not isinstance(radius, torch.Tensor) and radius == EPS[1]:
            return x.clone()
        return original(self, name, model_, twin, x, y, radius, seed, stats, steps)

    monkeypatch.setattr(assess_module._Setup, "attack", weak_at_large_eps)
    result = assess_robustness(model, dataset, **SETTINGS)
    counts = result.robust["worst case"].sum(axis=1)
    assert counts[1] > counts[0]
    n = len(result.rows)
    expected = (f"worst case: robust accuracy rises from eps={EPS[0]:g} to eps={EPS[1]:g} "
                f"({counts[0]} -> {counts[1]} of {n} rows, {counts[0] / n:.1%} -> {counts[1] / n:.1%})")
    assert sum(w.startswith(expected) for w in result.warnings) == 1, result.warnings
    monkeypatch.undo()
    honest = assess_robustness(model, dataset, **SETTINGS)
    assert not any(w.startswith("worst case:") for w in honest.warnings)


def test_apgd_still_improving_at_its_last_checkpoint_is_a_sign_of_a_weak_evaluation(digits):
    """Three APGD steps are far from converged on a CNN: the warning names each attack and radius
    with the counts, recomputed here chunk by chunk; with AutoAttack's 100 steps it is silent."""
    dataset, model = digits
    few = assess_robustness(model, dataset, attacks=("apgd-ce", "apgd-t"), eps=(0.1,), samples=64, steps=3,
                            search_steps=0, seed=SEED, device="cpu")
    x = torch.as_tensor(dataset.encode(dataset.test.X[few.rows]))
    y = torch.as_tensor(dataset.test.y[few.rows])
    box = constraints_for(dataset)
    stats = {"apgd-ce": AttackStats(), "apgd-t": AttackStats()}
    rows = row_chunks(len(x), 64)[0]
    first = apgd(model, x[rows], y[rows], 0.1, constraints=box, steps=3, seed=chunk_seed(SEED, "robustness", "apgd-ce",
                                                                                        0, 0), stats=stats["apgd-ce"])
    standing = ((predict(model, first) == y) & (predict(model, x) == y)).nonzero().squeeze(1)
    apgd(model, x[standing], y[standing], 0.1, constraints=box, steps=3, loss="dlr-targeted",
         target_classes=APGD_T_TARGETS, seed=chunk_seed(SEED, "robustness", "apgd-t", 0, 0), stats=stats["apgd-t"])
    lines = [w for w in few.warnings if "still rose at the last checkpoint" in w]
    for name, part in stats.items():
        assert part.improving_rows > max(IMPROVING_SHARE * part.checkpoint_rows, 2), name
        assert sum(line.startswith(f"{name}: at eps=0.1 the best loss still rose at the last checkpoint for "
                                   f"{part.improving_rows} of the {part.checkpoint_rows} rows its runs left unbroken "
                                   f"({part.still_improving:.1%}, over 5%)") for line in lines) == 1, (name, lines)
    converged = assess_robustness(model, dataset, attacks=("apgd-ce", "apgd-t"), eps=(0.1,), samples=64, steps=100,
                                  search_steps=0, seed=SEED, device="cpu")
    assert not any("still rose" in w for w in converged.warnings), converged.warnings
    assert converged.point("worst case", 0.1).robust_accuracy <= few.point("worst case", 0.1).robust_accuracy


@pytest.mark.parametrize("data, arch, epochs", [("digits", "cnn", 5), ("adult", "mlp", 1)])
def test_the_default_audit_gives_valid_findings(load, data, arch, epochs):
    import scrutiny
    from scrutiny.models import train_on

    dataset = load(data)
    model = train_on(dataset, arch, epochs=epochs, progress=False).model
    audit = scrutiny.run_audit(model, dataset, config={"families": ["robustness"], "robustness": {"samples": 24}},
                               progress=False)
    validate_findings(audit.document)
    document = audit.document["details"]["robustness"]
    jsonschema.validate(document, json.loads(schema_path("robustness").read_text(encoding="utf-8")))
    details = audit.details["robustness"]
    assert isinstance(details, RobustnessDetails) and RobustnessDetails.from_dict(document) == details
    assert details.attacks == list(DEFAULT_ATTACKS)
    assert details.settings["chain"] == "apgd-ce → apgd-t → square" and details.settings["steps"] == 100
    assert details.settings["apgd_t_targets"] == APGD_T_TARGETS
    clean = round(details.curve[0].clean_accuracy * details.n)
    for radius in details.eps:
        worst = next(p for p in details.curve if p.attack == "worst case" and p.eps == radius)
        broken = sum(e.broken for e in details.contributions if e.eps == radius)
        assert broken == clean - round(worst.robust_accuracy * details.n)
    gated = next(f for f in audit.findings if f.check == "robustness.robust_accuracy")
    assert gated.value == next(p.robust_accuracy for p in details.curve
                               if p.attack == "worst case" and p.eps == details.gated_eps)
    assert "apgd-ce → apgd-t → square as a chain" in gated.explanation
    # details written before the contributions were recorded still read
    old = {k: v for k, v in document.items() if k != "contributions"}
    assert RobustnessDetails.from_dict(RobustnessDetails.upgrade(old)).contributions == []
    assert all(re.fullmatch(r"[^\n]+", w) for w in details.warnings)


def test_the_manifest_hashes_each_chain_chunk_the_same_in_either_order(digits):
    """The chain is one piece of work per radius ("ensemble"), whose chunk outputs (every member's
    rows) hash to the same bytes whichever order the chunks ran in."""
    import scrutiny

    dataset, model = digits
    config = {"families": ["robustness"], "chunk_rows": 16,
              "robustness": {"samples": 40, "steps": 6, "queries": 40, "eps": [0.1], "detector": False}}
    forward = scrutiny.run_audit(model, dataset, config=config, progress=False)
    backward = scrutiny.run_audit(model, dataset, config=config, progress=False, executor=LocalExecutor(order="reversed"))
    assert forward.document == backward.document
    assert forward.manifest["chunks"] == backward.manifest["chunks"]
    works = [(entry["work"], entry["chunks"]) for entry in forward.manifest["chunks"]]
    assert works == [(["robustness", "ensemble", 0], 3), (["robustness", "gaussian", 0], 3),
                     (["robustness", "smallest_eps"], 3)]
