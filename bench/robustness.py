"""PGD cost and strength: scrutiny's :func:`pgd` against the bare passes it needs and the libraries.

Every side runs on the same model and the same batch: the digits CNN of
``train_on(load_dataset("digits"), "cnn", seed=0)`` in eval mode, and its 450 test images
(``ds.encode(ds.test.X)``, pixels in [0, 1]) tiled to ``--samples`` rows, attacked as one
batch: L∞, radius ``--eps``, ``--steps`` steps of 2.5·eps/steps, one uniform random start.

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

torchattacks is not a dependency of the project. Install it without its declared
dependencies, which would pull a CUDA build of torch and an old requests::

    pip install --no-deps torchattacks

Times are the best of ``--repeats`` runs after one untimed warm-up run of each side (which
also counts the rows each side sends through the model, with a forward pre-hook), the runs
being compared taking turns so that other work on the machine falls on all of them alike;
CUDA runs end with ``torch.cuda.synchronize``.

Usage::

    python bench/robustness.py [--device cpu|cuda] [--samples N] [--steps N] [--repeats N] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from _common import RowCounter, cpu_name, sync, versions
from scrutiny.audit.robustness.attacks import AttackStats, image_constraints, perturbation_norm, pgd
from scrutiny.models import load_dataset, train_on

LIBRARIES = (("torch", "torch"), ("torchattacks", "torchattacks"), ("art", "adversarial-robustness-toolbox"))
TORCHATTACKS_INSTALL = "pip install --no-deps torchattacks"


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


# ------------------------------------------------------------------ the attacks


def torchattacks_run(model, x, y, eps: float, alpha: float, steps: int, device: torch.device):
    """torchattacks' PGD on the same tensors, or None (and the install line) when it is missing."""
    try:
        import torchattacks
    except Exception as error:  # noqa: BLE001 - any failure to import means no comparison
        print(f"torchattacks is not importable ({type(error).__name__}: {error}); install it with "
              f"`{TORCHATTACKS_INSTALL}` (its declared dependencies would pull a CUDA build of torch and an old "
              f"requests). Skipping the torchattacks comparison.")
        return None
    attack = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

    def run():
        adv = attack(x, y)
        sync(device)
        return adv

    return run


def art_run(model, x, y, eps: float, alpha: float, steps: int, device: torch.device):
    """ART's ProjectedGradientDescent (its PyTorch implementation) on the same batch as numpy
    arrays, or None when ART is missing."""
    try:
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except Exception as error:  # noqa: BLE001 - any failure to import means no comparison
        print(f"ART is not importable ({type(error).__name__}: {error}); install adversarial-robustness-toolbox "
              f"(the project's dev extra) to time it. Skipping ART.")
        return None
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    classifier = PyTorchClassifier(
        model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
        nb_classes=n_classes, clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu",
    )
    attack = ProjectedGradientDescent(classifier, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps,
                                      num_random_init=1, batch_size=len(x), verbose=False)
    x_np, y_np = x.cpu().numpy(), y.cpu().numpy()

    def run():
        adv = torch.from_numpy(attack.generate(x_np, y_np)).to(device)
        sync(device)
        return adv

    return run


# ------------------------------------------------------------------ benchmark


def bench(args) -> dict:
    device = torch.device(args.device)
    dataset = load_dataset("digits")
    start = time.perf_counter()
    trained = train_on(dataset, "cnn", seed=0, progress=False, device=args.device, epochs=args.epochs)
    model = trained.model.eval().to(device)
    print(f"digits CNN trained in {time.perf_counter() - start:.1f} s on {trained.settings['device']} "
          f"(test accuracy {trained.metrics['accuracy']:.3f})", flush=True)

    X = dataset.encode(dataset.test.X)
    index = np.arange(args.samples) % len(X)  # test rows tiled up to --samples
    x = torch.as_tensor(X[index]).to(device)
    y = torch.as_tensor(dataset.test.y[index], dtype=torch.long).to(device)
    constraints = image_constraints(tuple(x.shape[1:]), (0.0, 1.0))
    eps, steps = args.eps, args.steps
    alpha = 2.5 * eps / steps
    torch.manual_seed(args.seed)  # torchattacks and ART draw their random starts from torch / numpy
    np.random.seed(args.seed)

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

    print(f"timing {', '.join(runs)}: one warm-up run each, then best of {args.repeats}, interleaved", flush=True)
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


def report(result: dict) -> None:
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
        ratio = "" if name == "ours" else f"{seconds['ours'] / seconds[name]:.2f}x"
        line = (f"{labels[name]:<52} {seconds[name]:>8.3f} {1000 * seconds[name] / steps:>8.1f} {rows[name]:>11,} "
                f"{robust:>10} {ratio:>11} {targets.get(name, ''):>8}")
        if cpu:
            cpu_seconds = result["cpu_seconds"]
            cpu_ratio = "" if name == "ours" else f"{cpu_seconds['ours'] / cpu_seconds[name]:.2f}x"
            line += f" {cpu_seconds[name]:>8.3f} {cpu_ratio:>7}"
        print(line)
    if "torchattacks" in result["robust"]:
        gap = result["robust"]["ours"] - result["robust"]["torchattacks"]
        print(f"robust accuracy, ours - torchattacks: {100 * gap:+.1f} points (expected within ~2)")
    outside = {name: value for name, value in result["outside"].items() if value > 1e-6}
    print("every adversarial batch lies in the eps-ball and [0, 1]" if not outside else
          "OUTSIDE the eps-ball or [0, 1]: " + ", ".join(f"{k} by {v:.2g}" for k, v in outside.items()))
    print(f"rows with an all-zero first input gradient (ours): {result['zero_gradient']:.1%}")
    print("notes: 'ours / this' divides our wall time by the run's (the targets apply to it); 'model rows' are the "
          "rows each run sent through the model's forward (counted in the warm-up run); ours counts a row as broken "
          "as soon as any iterate misclassifies it, torchattacks and ART keep their last iterate.")
    if cpu:
        print("'cpu s' is the least CPU time of this process over the repeats (all its threads) and '(cpu)' our CPU "
              "time over the run's: less swayed than wall time by other work on a shared machine, though idle "
              "worker threads spinning count in it.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=2000,
                        help="rows in the attacked batch, the 450 digits test rows tiled (default: 2000)")
    parser.add_argument("--steps", type=int, default=40, help="PGD steps (default: 40)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf radius in pixel units of [0, 1] (default: 0.1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each side; the best counts (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the random starts (default: 0)")
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
    for name in ("samples", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if not args.eps > 0:
        parser.error("--eps must be positive")

    print(f"{versions(LIBRARIES)}; {hardware(torch.device(args.device))}; best of {args.repeats} runs per timing")
    total = time.perf_counter()
    report(bench(args))
    print(f"\ntotal wall time {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
