"""Robustness cost and strength: scrutiny's :func:`pgd`, :func:`apgd` and :func:`certify` against
the bare passes they need and the libraries.

Every side runs on the same model: the digits CNN of
``train_on(load_dataset("digits"), "cnn", seed=0)`` in eval mode, trained once for all sections,
and the digits test images (``ds.encode(ds.test.X)``, pixels in [0, 1], 450 rows, tiled when
more are asked for). ``--sections`` picks the sections (default: all three, in this order).

PGD (``pgd``): ``--samples`` rows attacked as one batch: L∞, radius ``--eps``, ``--steps`` steps
of 2.5·eps/steps, one uniform random start.

1. Overhead. ``pgd(norm="linf", schedule="constant", step_size=2.5/steps, restarts=1,
   random_start=True)`` with ``image_constraints((1, 8, 8), (0.0, 1.0))`` and an
   ``AttackStats``, divided by the time of the bare passes it needs: the rows its
   ``stats.model_rows`` counts, run as ``steps`` batched forward + ``torch.autograd.grad``
   passes of the summed cross-entropy w.r.t. the whole input batch, then the rest (pgd's check
   of the last iterate) as batched forwards under ``no_grad``. Nothing else: no random start,
   step, projection or bookkeeping, so whatever ``pgd`` takes beyond the bare passes is its
   own overhead.
2. Against the libraries. ``torchattacks.PGD(model, eps, alpha=2.5*eps/steps, steps,
   random_start=True)`` on the same tensors (``steps`` forward + backward passes, no final
   check), and ART's ``ProjectedGradientDescent`` over a ``PyTorchClassifier`` (same eps, step
   and iterations, ``num_random_init=1``, the whole batch at once; it takes and returns numpy
   arrays, and predicts on the clean and adversarial batch at the end to log its success
   rate) when it is installed. Robust accuracy is the share of rows the model still classifies
   right on each attack's output. Ours keeps the first iterate that misclassifies a row,
   torchattacks and ART their last one, so ours may come out a little lower.

APGD (``apgd``): the same ``--samples`` rows and ``--eps``, ``--apgd-steps`` steps (default:
``--steps``), one random start, APGD-CE (Croce & Hein 2020) on all three sides:

3. ``apgd(norm="linf", loss="ce", steps, restarts=1, seed)`` with the same image constraints,
   ``torchattacks.APGD(model, norm="Linf", eps, steps, n_restarts=1, seed, loss="ce")`` on the
   same tensors, and ART's ``AutoProjectedGradientDescent`` over a ``PyTorchClassifier`` with
   ``clip_values=(0, 1)`` (``norm=inf``, ``eps_step=2*eps``, ``max_iter=steps``,
   ``nb_random_init=1``, ``loss_type="cross_entropy"``, ``batch_size`` = all rows; numpy in and
   out). Reported: seconds per attacked row, the rows each sent through the model, and robust
   accuracy on each output. All three leave rows the model already gets wrong alone; ours
   drops the rows it has broken at each of APGD's checkpoints, torchattacks and ART run every
   other row for all the steps (ART with a gradient pass and a separate loss forward at
   each). Ours keeps the first iterate that misclassifies a row.

Certification (``certify``): the first ``--certify-rows`` test rows, Gaussian noise of
``--sigma``, ``--n0`` selection and ``--n`` estimation copies per row, ``--batch-size`` copies
per forward pass, level ``--alpha``:

4. ``certify(model, x, sigma, n0, n, alpha, batch_size, seed, device)`` (Cohen et al.'s
   CERTIFY: fresh seeded noise on the device for every copy, class counts on the device),
   against the floor of bare batched forwards of as many rows in the same batches (the row's
   noise-free copies, built before the clock starts, through ``model`` under ``no_grad``;
   nothing else), and against ART's ``PyTorchRandomizedSmoothing`` over the same model
   (``sample_size=n0``, the copies its ``certify`` selects the class from, ``scale=sigma``,
   ``alpha``) and its ``certify(x, n=n, batch_size)``, which draws its noise with numpy on the
   host and sends each batch to the device. Reported: noisy forwards per second,
   rows × (n0 + n) / seconds, and the certified accuracy at radii 0, 0.25 and 0.5 from each
   (a row counts at radius r when it is certified with its true class and radius ≥ r), so that
   one sees the two estimators computed the same thing up to their noise draws. ART's
   confidence bound needs statsmodels, which neither the project nor ART declare.

torchattacks is not a dependency of the project. Install it without its declared
dependencies, which would pull a CUDA build of torch and an old requests::

    pip install --no-deps torchattacks

Times are the best of ``--repeats`` runs after one untimed warm-up run of each side (which
also counts the rows each side sends through the model, with a forward pre-hook), the runs
being compared taking turns so that other work on the machine falls on all of them alike;
CUDA runs end with ``torch.cuda.synchronize``.

Usage::

    python bench/robustness.py [--sections pgd,apgd,certify] [--device cpu|cuda] [--samples N] [--steps N]
        [--apgd-steps N] [--eps E] [--certify-rows N] [--n0 N] [--n N] [--sigma S] [--alpha A]
        [--batch-size N] [--repeats N] [--threads N] [--skip torchattacks|art]

On a GPU, the sizes of the issue: ``--device cuda --certify-rows 100 --n 100000``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import RowCounter, cpu_name, sync, versions
from scrutiny.audit.robustness.attacks import AttackStats, apgd, image_constraints, perturbation_norm, pgd
from scrutiny.audit.robustness.smoothing import ABSTAIN, certify
from scrutiny.models import load_dataset, train_on

LIBRARIES = (("torch", "torch"), ("torchattacks", "torchattacks"), ("art", "adversarial-robustness-toolbox"),
             ("statsmodels", "statsmodels"))
TORCHATTACKS_INSTALL = "pip install --no-deps torchattacks"
SECTIONS = ("pgd", "apgd", "certify")
RADII = (0.0, 0.25, 0.5)


# ------------------------------------------------------------------ helpers


def interleaved(repeats: int, runs: dict, model: torch.nn.Module):
    """One untimed warm-up call of each of ``runs`` (name → callable), which gives its result
    and the model rows it used, then ``repeats`` timed calls of each, taking turns. Returns the
    best wall seconds and the best CPU seconds of this process (each the least over the
    repeats), the warm-up results and the rows of each."""
    counter = RowCounter(model)
    first, rows = {}, {}
    for name, fn in runs.items():
        counter.take()
        first[name] = fn()
        rows[name] = counter.take()
    counter.handle.remove()
    best, best_cpu = dict.fromkeys(runs, math.inf), dict.fromkeys(runs, math.inf)
    for _ in range(repeats):
        for name, fn in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            best_cpu[name] = min(best_cpu[name], time.process_time() - start_cpu)
    return best, best_cpu, first, rows


def bare_passes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grad_passes: int, forward_passes: int,
                device: torch.device) -> None:
    """``grad_passes`` forward + input-gradient passes of the whole batch, then
    ``forward_passes`` forwards under no_grad: the model work of PGD and nothing else."""
    for _ in range(grad_passes):
        x_in = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_in), y, reduction="sum")
        torch.autograd.grad(loss, x_in)
    with torch.no_grad():
        for _ in range(forward_passes):
            model(x)
    sync(device)


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def largest_step_out(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> float:
    """How far the adversarial batch strays outside the ε-ball or [0, 1] (0 when it stays in)."""
    x_adv, x = x_adv.detach().cpu(), x.detach().cpu()
    outside_ball = float(np.max(perturbation_norm(x_adv, x, "linf"))) - eps
    outside_box = max(float(-x_adv.min()), float(x_adv.max()) - 1.0)
    return max(outside_ball, outside_box, 0.0)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()}, {torch.get_num_threads()} CPU threads"


def n_classes(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def certified_accuracy_at(prediction: np.ndarray, radius: np.ndarray, y: np.ndarray, radii) -> list[float]:
    """Share of rows certified with their true class at radius ≥ r, for each r (either side's output)."""
    correct = (prediction == y) & (prediction != ABSTAIN)
    return [float(np.mean(correct & (radius >= r))) for r in radii]


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "-"


# ------------------------------------------------------------------ the libraries


def import_torchattacks():
    """The torchattacks module, or None (and the install line) when it is missing."""
    try:
        import torchattacks
    except Exception as error:  # noqa: BLE001 - any failure to import means no comparison
        print(f"torchattacks is not importable ({type(error).__name__}: {error}); install it with "
              f"`{TORCHATTACKS_INSTALL}` (its declared dependencies would pull a CUDA build of torch and an old "
              f"requests). Skipping the torchattacks comparison.")
        return None
    return torchattacks


def art_classifier(model, x, device: torch.device):
    """An ART PyTorchClassifier over ``model`` for inputs like ``x`` in [0, 1], or None when ART is missing."""
    try:
        from art.estimators.classification import PyTorchClassifier
    except Exception as error:  # noqa: BLE001 - any failure to import means no comparison
        print(f"ART is not importable ({type(error).__name__}: {error}); install adversarial-robustness-toolbox "
              f"(the project's dev extra) to time it. Skipping ART.")
        return None
    return PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
        nb_classes=n_classes(model, x), clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )


def on_tensors(attack, x, y, device: torch.device):
    """A run of a torchattacks attack on the given tensors."""
    def run():
        adv = attack(x, y)
        sync(device)
        return adv

    return run


def on_arrays(attack, x, y, device: torch.device):
    """A run of an ART evasion attack on the batch as numpy arrays; its output back as a tensor."""
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()

    def run():
        adv = torch.from_numpy(attack.generate(x_np, y_np)).to(device)
        sync(device)
        return adv

    return run


def torchattacks_run(model, x, y, eps: float, alpha: float, steps: int, device: torch.device):
    """torchattacks' PGD on the same tensors, or None when it is missing."""
    torchattacks = import_torchattacks()
    if torchattacks is None:
        return None
    return on_tensors(torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True), x, y, device)


def art_run(model, x, y, eps: float, alpha: float, steps: int, device: torch.device):
    """ART's ProjectedGradientDescent (its PyTorch implementation) on the same batch as numpy
    arrays, or None when ART is missing."""
    classifier = art_classifier(model, x, device)
    if classifier is None:
        return None
    from art.attacks.evasion import ProjectedGradientDescent

    attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                      num_random_init=1, batch_size=len(x), verbose=False)
    return on_arrays(attack, x, y, device)


def torchattacks_apgd_run(model, x, y, eps: float, steps: int, seed: int, device: torch.device):
    """torchattacks' APGD-CE (L∞, one restart) on the same tensors, or None when it is missing."""
    torchattacks = import_torchattacks()
    if torchattacks is None:
        return None
    attack = torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed, loss="ce")
    return on_tensors(attack, x, y, device)


def art_apgd_run(model, x, y, eps: float, steps: int, device: torch.device):
    """ART's AutoProjectedGradientDescent (cross-entropy, one random start, the whole batch at
    once) on the same batch as numpy arrays, or None when ART is missing."""
    classifier = art_classifier(model, x, device)
    if classifier is None:
        return None
    from art.attacks.evasion import AutoProjectedGradientDescent

    attack = AutoProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=steps,
                                          targeted=False, nb_random_init=1, batch_size=len(x),
                                          loss_type="cross_entropy", verbose=False)
    return on_arrays(attack, x, y, device)


def art_certify_run(model, x, args, device: torch.device):
    """ART's randomized-smoothing CERTIFY over the same model, σ, n0, n, α and batch size, or
    None when ART or statsmodels (its confidence bound) is missing."""
    try:
        import statsmodels  # noqa: F401 - ART's certify imports it for the Clopper-Pearson bound
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except Exception as error:  # noqa: BLE001 - any failure to import means no comparison
        print(f"ART's randomized smoothing is not usable ({type(error).__name__}: {error}); install "
              f"adversarial-robustness-toolbox and statsmodels to time it. Skipping ART.")
        return None
    smoothed = PyTorchRandomizedSmoothing(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
        nb_classes=n_classes(model, x), device_type="gpu" if device.type == "cuda" else "cpu",
        sample_size=args.n0, scale=args.sigma, alpha=args.alpha,
    )
    x_np = x.cpu().numpy()

    def run():
        prediction, radius = smoothed.certify(x_np, n=args.n, batch_size=args.batch_size)
        sync(device)
        return np.asarray(prediction, dtype=np.int64), np.asarray(radius, dtype=np.float64)

    return run


# ------------------------------------------------------------------ the model and data


def setup(args):
    """The digits CNN (eval mode, on the device) and the encoded test images and labels."""
    device = torch.device(args.device)
    dataset = load_dataset("digits")
    start = time.perf_counter()
    trained = train_on(dataset, "cnn", seed=0, progress=False, device=args.device, epochs=args.epochs)
    model = trained.model.eval().to(device)
    print(f"digits CNN trained in {time.perf_counter() - start:.1f} s on {trained.settings['device']} "
          f"(test accuracy {trained.metrics['accuracy']:.3f})", flush=True)
    return model, dataset.encode(dataset.test.X), np.asarray(dataset.test.y)


def batch_of(X: np.ndarray, labels: np.ndarray, rows: int, device: torch.device):
    """The first ``rows`` test rows (tiled past the 450 there are) as tensors on the device."""
    index = np.arange(rows) % len(X)
    return (torch.as_tensor(X[index]).to(device), torch.as_tensor(labels[index], dtype=torch.long).to(device))


def seed_libraries(seed: int) -> None:
    """torchattacks and ART draw their random starts and noise from torch / numpy."""
    torch.manual_seed(seed)
    np.random.seed(seed)


# ------------------------------------------------------------------ PGD


def bench_pgd(args, model, X, labels) -> dict:
    device = torch.device(args.device)
    x, y = batch_of(X, labels, args.samples, device)
    constraints = image_constraints(tuple(x.shape[1:]), (0.0, 1.0))
    eps, steps = args.eps, args.steps
    alpha = 2.5 * eps / steps
    seed_libraries(args.seed)

    def ours():
        stats = AttackStats()
        adv = pgd(model, x, y, eps, norm="linf", constraints=constraints, steps=steps, step_size=2.5 / steps,
                  schedule="constant", restarts=1, random_start=True, seed=args.seed, stats=stats)
        sync(device)
        return adv, stats

    # how many rows our pgd runs: the bare passes must match it
    _, stats = ours()
    grad_rows = steps * len(x)  # one restart: every step takes the whole batch
    forward_rows = stats.model_rows - grad_rows
    if forward_rows < 0 or forward_rows % len(x):
        raise SystemExit(f"pgd ran {stats.model_rows:,} model rows, which is not {steps} gradient passes of "
                         f"{len(x):,} rows plus whole-batch forwards: update bare_passes to its new work")
    forward_passes = forward_rows // len(x)

    runs = {"ours": ours, "bare": lambda: bare_passes(model, x, y, steps, forward_passes, device)}
    stock = None if "torchattacks" in args.skip else torchattacks_run(model, x, y, eps, alpha, steps, device)
    if stock:
        runs["torchattacks"] = stock
    art = None if "art" in args.skip else art_run(model, x, y, eps, alpha, steps, device)
    if art:
        runs["art"] = art

    print(f"PGD: timing {', '.join(runs)}: one warm-up run each, then best of {args.repeats}, interleaved", flush=True)
    best, best_cpu, first, rows = interleaved(args.repeats, runs, model)
    adversarial = {"ours": first["ours"][0], **{name: first[name] for name in runs if name not in ("ours", "bare")}}
    if rows["ours"] != stats.model_rows:
        print(f"note: the forward hook counted {rows['ours']:,} rows for pgd, AttackStats {stats.model_rows:,}")
    return {
        "samples": len(x), "unique": len(X), "device": str(device), "eps": eps, "steps": steps, "alpha": alpha,
        "model_rows": stats.model_rows, "forward_passes": forward_passes, "seconds": best, "cpu_seconds": best_cpu,
        "rows": rows,
        "clean": accuracy(model, x, y),
        "robust": {name: accuracy(model, adv, y) for name, adv in adversarial.items()},
        "outside": {name: largest_step_out(adv, x, eps) for name, adv in adversarial.items()},
        "zero_gradient": first["ours"][1].zero_gradient,
    }


def report_outside(outside: dict) -> None:
    outside = {name: value for name, value in outside.items() if value > 1e-6}
    print("every adversarial batch lies in the eps-ball and [0, 1]" if not outside else
          "OUTSIDE the eps-ball or [0, 1]: " + ", ".join(f"{k} by {v:.2g}" for k, v in outside.items()))


def report_pgd(result: dict) -> None:
    seconds, rows = result["seconds"], result["rows"]
    n, steps = result["samples"], result["steps"]
    print(f"\nPGD L-inf eps={result['eps']:g}, {steps} steps of {result['alpha']:.4g} (2.5 eps/steps), one random "
          f"start, on {n:,} digits test rows ({min(n, result['unique'])} distinct{', tiled' if n > result['unique'] else ''}) as one batch ({result['device']}); "
          f"clean accuracy {result['clean']:.3f}")
    print(f"pgd's model rows (AttackStats.model_rows): {result['model_rows']:,} = {steps} forward+grad passes "
          f"x {n:,} rows + {result['forward_passes']} forward pass(es) x {n:,} rows")
    labels = {
        "ours": "ours: pgd(constant, step_size=2.5/steps)",
        "bare": f"bare: {steps} x (forward + autograd.grad) + {result['forward_passes']} x forward",
        "torchattacks": "torchattacks.PGD(eps, alpha, steps, random_start)",
        "art": "ART ProjectedGradientDescent (PyTorchClassifier)",
    }
    targets = {"bare": "<= 1.15", "torchattacks": "<= 1.00"}
    cpu = result["device"] == "cpu"  # CPU seconds say little when the work runs on a GPU
    header = (f"{'run':<52} {'seconds':>8} {'ms/step':>8} {'model rows':>11} {'robust acc':>10} "
              f"{'ours / this':>11} {'target':>8}" + (f" {'cpu s':>8} {'(cpu)':>7}" if cpu else ""))
    print(header)
    print("-" * len(header))
    for name in seconds:
        robust = f"{result['robust'][name]:.3f}" if name in result["robust"] else "-"
        times = "" if name == "ours" else ratio(seconds["ours"], seconds[name])
        line = (f"{labels[name]:<52} {seconds[name]:>8.3f} {1000 * seconds[name] / steps:>8.1f} {rows[name]:>11,} "
                f"{robust:>10} {times:>11} {targets.get(name, ''):>8}")
        if cpu:
            cpu_seconds = result["cpu_seconds"]
            cpu_ratio = "" if name == "ours" else ratio(cpu_seconds["ours"], cpu_seconds[name])
            line += f" {cpu_seconds[name]:>8.3f} {cpu_ratio:>7}"
        print(line)
    if "torchattacks" in result["robust"]:
        gap = result["robust"]["ours"] - result["robust"]["torchattacks"]
        print(f"robust accuracy, ours - torchattacks: {100 * gap:+.1f} points (expected within ~2)")
    report_outside(result["outside"])
    print(f"rows with an all-zero first input gradient (ours): {result['zero_gradient']:.1%}")
    print("notes: 'ours / this' divides our wall time by the run's (the targets apply to it); 'model rows' are the "
          "rows each run sent through the model's forward (counted in the warm-up run); ours counts a row as broken "
          "as soon as any iterate misclassifies it, torchattacks and ART keep their last iterate.")
    if cpu:
        print("'cpu s' is the least CPU time of this process over the repeats (all its threads) and '(cpu)' our CPU "
              "time over the run's: less swayed than wall time by other work on a shared machine, though idle "
              "worker threads spinning count in it.")


# ------------------------------------------------------------------ APGD


def bench_apgd(args, model, X, labels) -> dict:
    device = torch.device(args.device)
    x, y = batch_of(X, labels, args.samples, device)
    constraints = image_constraints(tuple(x.shape[1:]), (0.0, 1.0))
    eps, steps = args.eps, args.apgd_steps
    seed_libraries(args.seed)

    def ours():
        stats = AttackStats()
        adv = apgd(model, x, y, eps, norm="linf", constraints=constraints, steps=steps, restarts=1, loss="ce",
                   random_start=True, seed=args.seed, stats=stats)
        sync(device)
        return adv, stats

    runs = {"ours": ours}
    stock = None if "torchattacks" in args.skip else torchattacks_apgd_run(model, x, y, eps, steps, args.seed, device)
    if stock:
        runs["torchattacks"] = stock
    art = None if "art" in args.skip else art_apgd_run(model, x, y, eps, steps, device)
    if art:
        runs["art"] = art

    print(f"APGD: timing {', '.join(runs)}: one warm-up run each, then best of {args.repeats}, interleaved",
          flush=True)
    best, best_cpu, first, rows = interleaved(args.repeats, runs, model)
    adversarial = {"ours": first["ours"][0], **{name: first[name] for name in runs if name != "ours"}}
    stats = first["ours"][1]
    return {
        "samples": len(x), "unique": len(X), "device": str(device), "eps": eps, "steps": steps,
        "seconds": best, "cpu_seconds": best_cpu, "rows": rows, "stats_rows": stats.model_rows,
        "clean": accuracy(model, x, y),
        "robust": {name: accuracy(model, adv, y) for name, adv in adversarial.items()},
        "outside": {name: largest_step_out(adv, x, eps) for name, adv in adversarial.items()},
        "still_improving": stats.still_improving,
    }


def report_apgd(result: dict) -> None:
    seconds, cpu_seconds, rows, n = result["seconds"], result["cpu_seconds"], result["rows"], result["samples"]
    distinct = f"{min(n, result['unique'])} distinct{', tiled' if n > result['unique'] else ''}"
    print(f"\nAPGD-CE L-inf eps={result['eps']:g}, {result['steps']} steps, step 2 eps at first, one random start, on "
          f"{n:,} digits test rows ({distinct}) as one batch ({result['device']}); clean accuracy "
          f"{result['clean']:.3f}")
    labels = {
        "ours": "ours: apgd(loss='ce', restarts=1)",
        "torchattacks": "torchattacks.APGD(loss='ce', n_restarts=1)",
        "art": "ART AutoProjectedGradientDescent (cross_entropy)",
    }
    cpu = result["device"] == "cpu"
    header = (f"{'run':<50} {'seconds':>8} {'ms/row':>8} {'model rows':>11} {'robust acc':>10} {'ours / this':>11}"
              + (f" {'cpu s':>8} {'(cpu)':>7}" if cpu else ""))
    print(header)
    print("-" * len(header))
    for name in seconds:
        times = "" if name == "ours" else ratio(seconds["ours"], seconds[name])
        line = (f"{labels[name]:<50} {seconds[name]:>8.3f} {1000 * seconds[name] / n:>8.3f} {rows[name]:>11,} "
                f"{result['robust'][name]:>10.3f} {times:>11}")
        if cpu:
            cpu_ratio = "" if name == "ours" else ratio(cpu_seconds["ours"], cpu_seconds[name])
            line += f" {cpu_seconds[name]:>8.3f} {cpu_ratio:>7}"
        print(line)
    for name in ("torchattacks", "art"):
        if name in result["robust"]:
            gap = result["robust"]["ours"] - result["robust"][name]
            print(f"robust accuracy, ours - {name}: {100 * gap:+.1f} points")
    report_outside(result["outside"])
    if rows["ours"] != result["stats_rows"]:
        print(f"note: the forward hook counted {rows['ours']:,} rows for apgd, AttackStats {result['stats_rows']:,}")
    print(f"rows left standing whose best loss still rose at the last checkpoint (ours): "
          f"{result['still_improving']:.1%}")
    print("notes: 'ms/row' is the run's wall time per attacked row; 'ours / this' divides our wall time by the "
          "run's; ours drops the rows it has broken at each checkpoint, torchattacks and ART attack every row "
          "that was right at the start for all the steps.")


# ------------------------------------------------------------------ certification


def batch_sizes(count: int, batch_size: int) -> list[int]:
    """The batches ``count`` copies go through the model in, as certify takes them."""
    return [min(batch_size, count - done) for done in range(0, count, batch_size)]


def bench_certify(args, model, X, labels) -> dict:
    device = torch.device(args.device)
    x, y_t = batch_of(X, labels, args.certify_rows, device)
    y = y_t.cpu().numpy()
    seed_libraries(args.seed)

    def ours():
        cert = certify(model, x, sigma=args.sigma, n0=args.n0, n=args.n, alpha=args.alpha,
                       batch_size=args.batch_size, seed=args.seed, device=device)
        sync(device)
        return cert.prediction, cert.radius

    # the floor: the same batches of each row's noise-free copies, built before the clock starts
    sizes = batch_sizes(args.n0, args.batch_size) + batch_sizes(args.n, args.batch_size)
    copies = [row.expand(max(sizes), *row.shape).contiguous() for row in x]

    def bare():
        with torch.no_grad():
            for batch in copies:
                for size in sizes:
                    model(batch[:size])
        sync(device)

    runs = {"ours": ours, "bare": bare}
    art = None if "art" in args.skip else art_certify_run(model, x, args, device)
    if art:
        runs["art"] = art

    print(f"certification: timing {', '.join(runs)}: one warm-up run each, then best of {args.repeats}, "
          f"interleaved", flush=True)
    best, best_cpu, first, rows = interleaved(args.repeats, runs, model)
    outputs = {name: first[name] for name in runs if name != "bare"}
    agree = None
    if "art" in outputs:
        agree = {"class": float(np.mean(outputs["ours"][0] == outputs["art"][0])),
                 "radius": float(np.max(np.abs(outputs["ours"][1] - outputs["art"][1])))}
    return {
        "rows_certified": len(x), "unique": len(X), "device": str(device), "sigma": args.sigma, "n0": args.n0,
        "n": args.n, "alpha": args.alpha, "batch_size": args.batch_size, "seconds": best, "cpu_seconds": best_cpu,
        "rows": rows, "forwards": len(x) * (args.n0 + args.n),
        "clean": accuracy(model, x, y_t),
        "certified": {name: certified_accuracy_at(pred, radius, y, RADII) for name, (pred, radius) in outputs.items()},
        "abstained": {name: float(np.mean(pred == ABSTAIN)) for name, (pred, _) in outputs.items()},
        "agree": agree,
    }


def report_certify(result: dict) -> None:
    seconds, cpu_seconds, rows = result["seconds"], result["cpu_seconds"], result["rows"]
    k, forwards = result["rows_certified"], result["forwards"]
    distinct = f"{min(k, result['unique'])} distinct{', tiled' if k > result['unique'] else ''}"
    print(f"\nCertification (Cohen et al. CERTIFY), sigma={result['sigma']:g}, n0={result['n0']:,}, n={result['n']:,}, "
          f"alpha={result['alpha']:g}, {result['batch_size']:,} copies per forward, on {k:,} digits test rows "
          f"({distinct}, {result['device']}): {forwards:,} noisy forwards per side; clean accuracy "
          f"{result['clean']:.3f}")
    labels = {
        "ours": "ours: certify(sigma, n0, n, alpha, batch_size)",
        "bare": "bare: model(noise-free copies), same batches",
        "art": "ART PyTorchRandomizedSmoothing.certify",
    }
    cpu = result["device"] == "cpu"
    acc_header = " ".join(f"{'cert@' + format(r, 'g'):>8}" for r in RADII)
    header = (f"{'run':<48} {'seconds':>8} {'forwards/s':>11} {'model rows':>11} {'ours/this f/s':>13} {acc_header} "
              f"{'abstain':>7}" + (f" {'cpu s':>8} {'(cpu)':>7}" if cpu else ""))
    print(header)
    print("-" * len(header))
    for name in seconds:
        # 'ours / this' as throughput: ours per second over this one's, > 1 when ours is faster
        times = "" if name == "ours" else ratio(seconds[name], seconds["ours"])
        certified = result["certified"].get(name)
        accs = " ".join(f"{a:>8.3f}" for a in certified) if certified else " ".join(f"{'-':>8}" for _ in RADII)
        abstain = f"{result['abstained'][name]:>7.1%}" if name in result["abstained"] else f"{'-':>7}"
        line = (f"{labels[name]:<48} {seconds[name]:>8.2f} {forwards / seconds[name]:>11,.0f} {rows[name]:>11,} "
                f"{times:>13} {accs} {abstain}")
        if cpu:
            cpu_ratio = "" if name == "ours" else ratio(cpu_seconds[name], cpu_seconds["ours"])
            line += f" {cpu_seconds[name]:>8.2f} {cpu_ratio:>7}"
        print(line)
    if result["agree"]:
        print(f"ours and ART certify the same class (or both abstain) on {result['agree']['class']:.0%} of the rows; "
              f"their radii differ by at most {result['agree']['radius']:.3f} (different noise draws)")
    print("notes: 'forwards/s' is rows x (n0 + n) / wall seconds; 'ours/this f/s' is our forwards per second "
          "over the run's (above 1: ours is faster; the bare forwards are the floor, so ours above 1 against "
          "them is timing noise); 'cert@r' is the share of rows certified with their true class at radius >= r.")


# ------------------------------------------------------------------ summary and entry point


def summary(results: dict) -> None:
    print("\nsummary (wall-time ratios; > 1 means ours took longer, except throughput):")
    if "pgd" in results:
        r = results["pgd"]
        parts = [f"ours/{name} {ratio(r['seconds']['ours'], r['seconds'][name])}" for name in r["seconds"]
                 if name != "ours"]
        robust = ", ".join(f"{name} {value:.3f}" for name, value in r["robust"].items())
        print(f"  PGD  ({r['samples']:,} rows, {r['steps']} steps): {', '.join(parts)}; robust accuracy {robust}")
    if "apgd" in results:
        r = results["apgd"]
        per_row = ", ".join(f"{name} {1000 * s / r['samples']:.3f} ms/row" for name, s in r["seconds"].items())
        parts = [f"ours/{name} {ratio(r['seconds']['ours'], r['seconds'][name])}" for name in r["seconds"]
                 if name != "ours"]
        robust = ", ".join(f"{name} {value:.3f}" for name, value in r["robust"].items())
        print(f"  APGD ({r['samples']:,} rows, {r['steps']} steps): {per_row}; {', '.join(parts)}; robust accuracy "
              f"{robust}")
    if "certify" in results:
        r = results["certify"]
        rates = ", ".join(f"{name} {r['forwards'] / s:,.0f}/s" for name, s in r["seconds"].items())
        certified = "; ".join(f"{name} " + "/".join(f"{a:.3f}" for a in accs) for name, accs in r["certified"].items())
        print(f"  certify ({r['rows_certified']:,} rows, n0={r['n0']:,}, n={r['n']:,}, sigma={r['sigma']:g}): noisy "
              f"forwards {rates}; certified accuracy at radii {'/'.join(format(x, 'g') for x in RADII)}: {certified}")


def parse_sections(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(SECTIONS)}; got {text!r}")
    return [name for name in SECTIONS if name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", type=parse_sections, default=list(SECTIONS),
                        help=f"comma-separated sections to run, of {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=2000,
                        help="rows in the batch PGD and APGD attack, the 450 digits test rows tiled (default: 2000)")
    parser.add_argument("--steps", type=int, default=40, help="PGD steps (default: 40)")
    parser.add_argument("--apgd-steps", type=int, help="APGD steps (default: --steps)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf radius in pixel units of [0, 1] (default: 0.1)")
    parser.add_argument("--certify-rows", type=int, default=20,
                        help="test rows to certify, the first ones (default: 20)")
    parser.add_argument("--n0", type=int, default=100, help="selection copies per certified row (default: 100)")
    parser.add_argument("--n", type=int, default=10_000, help="estimation copies per certified row (default: 10000)")
    parser.add_argument("--sigma", type=float, default=0.25,
                        help="noise standard deviation for certification, pixel units (default: 0.25)")
    parser.add_argument("--alpha", type=float, default=0.001, help="certification failure probability (default: 0.001)")
    parser.add_argument("--batch-size", type=int, default=1000,
                        help="noisy copies per forward pass in certification (default: 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side; the best counts (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random starts and noise (default: 0)")
    parser.add_argument("--epochs", type=int, help="training epochs of the CNN (default: the recipe's)")
    parser.add_argument("--skip", choices=["torchattacks", "art"], action="append", default=[],
                        help="leave out a library")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available here: running on CPU")
        args.device = "cpu"
    if args.apgd_steps is None:
        args.apgd_steps = args.steps
    for name in ("samples", "steps", "apgd_steps", "repeats", "certify_rows", "n0", "n", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.n0 > args.n:
        parser.error(f"--n0 must be at most --n; got {args.n0:,} and {args.n:,}")
    if not args.eps > 0:
        parser.error("--eps must be positive")
    if not 0 < args.sigma < math.inf:
        parser.error("--sigma must be a positive number")
    if not 0 < args.alpha < 1:
        parser.error("--alpha must lie in (0, 1)")

    print(f"{versions(LIBRARIES)}; {hardware(torch.device(args.device))}; best of {args.repeats} runs per timing; "
          f"sections {', '.join(args.sections)}")
    total = time.perf_counter()
    model, X, labels = setup(args)
    benches = {"pgd": (bench_pgd, report_pgd), "apgd": (bench_apgd, report_apgd),
               "certify": (bench_certify, report_certify)}
    results = {}
    for name in args.sections:
        run, show = benches[name]
        start = time.perf_counter()
        results[name] = run(args, model, X, labels)
        show(results[name])
        print(f"({name} section: {time.perf_counter() - start:.0f} s)", flush=True)
    summary(results)
    print(f"\ntotal wall time {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
