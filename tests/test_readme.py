"""The README's examples run as written.

Every ``scrutiny …`` command in a fenced code block of README.md is

- parsed by the real CLI (click's ``make_context`` on the typer app: no work is done), so every
  command and option exists and every value has its type and range; the values the CLI checks
  only once it runs (data set names, attribution methods, attacks, report formats,
  architectures, protected attributes, ε) are checked with the same functions the CLI uses;
- checked against the artifact chain: every checkpoint, run folder and file a command reads is
  written by an earlier README command (or ships in the repository), and every raw data set it
  reads was fetched earlier;
- run for real when it is cheap (RUN_HERE), in a scratch folder holding the artifacts the
  earlier commands write (models trained and audited once per test session, as those commands
  do), with smaller sample counts where the README's own are slow (SMALLER); the expensive ones
  are run by the tests named in COVERED_ELSEWHERE.

.ci/run must run exactly the README's test command, and the example model card the README
points to must load.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from scrutiny.cli import main

pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# README commands (by subcommand) that run here for real; extra arguments shrink the slow ones
RUN_HERE = {"--version", "data list", "data fetch", "data columns", "evaluate", "report", "explain", "attack", "export"}
SMALLER = {
    "explain": ["--samples", "8"],
    "attack": ["--samples", "16", "--steps", "5", "--queries", "50", "--no-detector"],
}

# | README command | test that runs it (the README's command with the fixtures' paths)        |
# |----------------|--------------------------------------------------------------------------|
# | train          | test_cli.py::test_train_writes_checkpoint_and_prints_accuracy (CLI train); |
# |                | conftest.py `trained` (train_on with train's defaults, seed 0), used by    |
# |                | test_training.py::test_default_training_covers_every_architecture          |
# | audit          | test_audit_runner.py::test_exit_code_follows_the_verdict (CLI audit of the |
# |                | Adult MLP and digits CNN, small --config); bench/audit.py times the full one; |
# |                | with --predictions: test_predictions_audit.py (the README's COMPAS command, |
# |                | on the fetched file, with examples/compas-deciles.toml); with --twin:       |
# |                | test_onnx_audit.py (an exported checkpoint audited with its twin)           |
# | fairness       | test_fairness.py::test_cli_fairness_data_only_and_model (CLI, --attributes);|
# |                | test_fairness.py::test_mitigation_before_and_after (--mitigate sex, Adult) |
# | app            | test_app.py::test_terminating_scrutiny_app_stops_the_server (the server);  |
# |                | test_app_e2e.py::test_page_in_headless_chromium (every page in Chromium)   |
# | certify        | test_smoothing.py::test_certify_an_image_model (an image model, CLI);      |
# |                | ::test_train_with_noise_records_it_and_certify_runs_end_to_end (a table)   |
COVERED_ELSEWHERE = {
    "trend": ["test_trend.py::test_every_number_in_the_html_is_the_named_runs_value"],
    "sign": ["test_signoff.py::test_two_signoffs_verify_and_change_nothing_else"],
    "verify": ["test_signoff.py::test_two_signoffs_verify_and_change_nothing_else",
               "test_signoff.py::test_verify_names_what_was_changed_after_signing"],
    "train": ["test_cli.py::test_train_writes_checkpoint_and_prints_accuracy",
              "test_training.py::test_default_training_covers_every_architecture",
              "test_multiclass.py::test_the_readme_penguins_commands_run"],
    "audit": ["test_audit_runner.py::test_exit_code_follows_the_verdict",
              "test_predictions_audit.py::test_compas_error_rates_of_every_race_equal_propublica_counts",
              "test_onnx_audit.py::test_cli_audit_with_a_twin_records_it",
              "test_multiclass.py::test_the_readme_penguins_commands_run",
              "test_executors.py::test_ray_on_two_workers_of_a_two_node_cluster_gives_the_same_findings"],
    "fairness": ["test_fairness.py::test_cli_fairness_data_only_and_model",
                 "test_fairness.py::test_mitigation_before_and_after"],
    "app": ["test_app.py::test_terminating_scrutiny_app_stops_the_server",
            "test_app_e2e.py::test_page_in_headless_chromium"],
    "certify": ["test_smoothing.py::test_certify_an_image_model",
                "test_smoothing.py::test_train_with_noise_records_it_and_certify_runs_end_to_end"],
}


@dataclass(frozen=True)
class Command:
    line: int
    argv: tuple[str, ...]  # after "scrutiny"

    @property
    def name(self) -> str:
        """The subcommand: "audit", "data fetch", or the option given alone ("--version")."""
        words = [a for a in self.argv if not a.startswith("-")]
        if not words:
            return self.argv[0]
        return " ".join(words[:2]) if words[0] == "data" else words[0]

    def __str__(self) -> str:
        return f"README.md:{self.line}: scrutiny {shlex.join(self.argv)}"


def readme_commands() -> list[Command]:
    """Every ``scrutiny`` command in a fenced code block, in order (one line may chain several
    with ``&&`` or ``;``)."""
    commands, fence = [], None
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence not in ("bash", "sh", "console"):
            continue
        for part in re.split(r"&&|;|\|\|", line):
            words = shlex.split(part)
            if words and words[0] == "scrutiny":
                commands.append(Command(number, tuple(words[1:])))
    return commands


COMMANDS = readme_commands()


def parse(argv) -> object:
    """The click context of the (sub)command ``argv`` names, with its parameters converted and
    checked as the CLI does before running it. Raises click's usage errors."""
    import typer

    from scrutiny.cli import app

    command = typer.main.get_command(app)
    context = command.make_context("scrutiny", list(argv))
    while hasattr(command, "resolve_command"):  # a group: descend into the subcommand
        name, command, rest = command.resolve_command(context, [*context._protected_args, *context.args])
        context = command.make_context(name, rest, parent=context)
    return context


# ---------------------------------------------------------------- the list itself


def test_the_readme_has_the_commands_its_sections_promise():
    names = [c.name for c in COMMANDS]
    for expected in ("data fetch", "train", "evaluate", "audit", "report", "app", "explain", "attack", "fairness"):
        assert expected in names, expected
    assert all(c.name in RUN_HERE or c.name in COVERED_ELSEWHERE for c in COMMANDS), \
        [str(c) for c in COMMANDS if c.name not in RUN_HERE | set(COVERED_ELSEWHERE)]


def test_the_tests_named_as_covering_a_command_exist():
    for tests in COVERED_ELSEWHERE.values():
        for test in tests:
            file, name = test.split("::")
            assert re.search(rf"^def {name}\(", (ROOT / "tests" / file).read_text(encoding="utf-8"), re.MULTILINE), test


def test_ci_runs_exactly_the_readme_test_command():
    text = README.read_text(encoding="utf-8")
    block = text.split("Run the tests", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0].strip()
    assert block.endswith("python -m pytest -n 2 --dist loadfile"), block
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1].strip() == block, (ci[-1], block)


# ---------------------------------------------------------------- every command parses, every value is valid


def _check_values(command: Command, params: dict, load) -> None:
    """The values the CLI checks only when it runs, with the functions it uses."""
    from scrutiny.audit.attributions.explain import resolve_methods
    from scrutiny.audit.robustness.assess import parse_attacks
    from scrutiny.models import DATASETS, RAW_FILES
    from scrutiny.models.architectures import ARCHITECTURES
    from scrutiny.reports.render import FORMATS

    data = params.get("data")
    if data is not None:
        assert data in DATASETS or (ROOT / data).is_file(), f"{command}: --data {data} is neither a built-in " \
                                                             "data set nor a file in the repository"
    for name in params.get("names") or []:
        assert name in RAW_FILES or name == "all", f"{command}: cannot fetch {name}"
    if params.get("method"):
        resolve_methods(params["method"].split(","))
    if params.get("attacks"):
        parse_attacks(params["attacks"].split(","))
    if params.get("formats"):
        assert set(params["formats"].split(",")) <= set(FORMATS), command
    if params.get("arch"):
        assert params["arch"] in ARCHITECTURES and params["arch"] != "autoencoder", command
    if params.get("eps"):
        assert all(float(e) > 0 for e in params["eps"].split(",")), command
    for key in ("attributes", "mitigate"):
        if params.get(key):
            protected = {a.name for a in load(data).spec.protected}
            assert set(params[key].split(",")) <= protected, f"{command}: --{key} {params[key]} not in {protected}"


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_command_parses_with_valid_values(command, load, capsys):
    try:
        context = parse(command.argv)
    except Exception as exc:
        if type(exc).__name__ == "Exit" and getattr(exc, "exit_code", 0) == 0:  # --version prints and exits 0
            assert command.name == "--version" and capsys.readouterr().out.startswith("scrutiny ")
            return
        raise AssertionError(f"{command}: {type(exc).__name__}: {exc}") from None
    _check_values(command, context.params, load)


def test_the_listed_architectures_are_the_ones_train_accepts(load):
    from scrutiny.errors import InputError
    from scrutiny.models import train_on
    from scrutiny.models.architectures import ARCHITECTURES

    text = README.read_text(encoding="utf-8")
    paragraph = text.split("Architectures (`--arch`):", 1)[1].split("\n\n", 1)[0]
    listed = [name for name in re.findall(r"`([a-z_]+)`", paragraph) if name in ARCHITECTURES]
    assert sorted(set(listed)) == sorted(set(ARCHITECTURES) - {"autoencoder"}), listed
    with pytest.raises(InputError, match="not a classifier"):  # cheap: refused before any training
        train_on(load("breast_cancer"), "autoencoder", progress=False)


# ---------------------------------------------------------------- the artifact chain


def _folder(path: str) -> str:
    return str(Path(path))


def test_every_artifact_a_command_reads_is_written_by_an_earlier_command():
    from scrutiny.models import RAW_FILES

    fetched, checkpoints, runs = set(), set(), set()
    for command in COMMANDS:
        params = parse(command.argv).params if command.name != "--version" else {}
        data = params.get("data") or (params.get("name") if command.name == "data columns" else None)
        if data in RAW_FILES:
            assert data in fetched, f"{command}: reads {data}, which no earlier command fetches"
        predictions = params.get("predictions")
        if predictions is not None:  # a raw file in the data directory: fetched earlier
            raw = Path(predictions).parent.name
            assert raw in fetched, f"{command}: reads {predictions}, which no earlier command fetches"
        model = params.get("model")
        if model is not None:
            assert _folder(model) in checkpoints, f"{command}: reads {model}, which no earlier command trains"
        if command.name == "report":
            assert _folder(params["run"]) in runs, f"{command}: no earlier command audits into {params['run']}"
        if command.name == "app":
            assert any(Path(r).parent == Path(params["runs"]) for r in runs), f"{command}: no run in {params['runs']}"
        for key in ("card", "config", "policy", "mapping", "spec"):
            if params.get(key) is not None:
                assert (ROOT / params[key]).is_file(), f"{command}: --{key} {params[key]} is not in the repository"
        if command.name == "data fetch":
            fetched |= set(RAW_FILES) if params["names"] == ["all"] else set(params["names"])
        if params.get("twin") is not None:
            assert _folder(params["twin"]) in checkpoints, f"{command}: --twin {params['twin']} is not trained earlier"
        if command.name in ("train", "export"):
            checkpoints.add(_folder(params["out"]))
        if command.name == "audit":
            runs.add(_folder(params["out"]))


# ---------------------------------------------------------------- the cheap commands, for real


@pytest.fixture(scope="module")
def workspace(trained, tmp_path_factory, request):
    """A scratch folder holding what the README's train and audit commands write there, and the
    repository's examples/ (the README's --card file)."""
    from scrutiny.models import DATASETS

    from .test_app import build_runs

    folder = tmp_path_factory.mktemp("readme")
    for command in COMMANDS:
        if command.name == "train":
            params = parse(command.argv).params
            if params["data"] not in DATASETS:
                continue  # an example table's commands: tests/test_multiclass.py runs them
            _, _, checkpoint = trained(params["data"], params["arch"] or "mlp")
            shutil.copytree(checkpoint, folder / params["out"])
    runs = build_runs(trained, tmp_path_factory, request)  # the app tests' Adult audit of the Adult MLP
    for command in COMMANDS:
        if command.name == "audit":
            params = parse(command.argv).params
            if params["predictions"] is not None or params["twin"] is not None or params["data"] not in DATASETS:
                continue  # run by tests/test_predictions_audit.py and tests/test_onnx_audit.py; no cheap command reads it
            assert params["data"] == "adult" and "adult-mlp" in params["model"], command  # what RUNS/adult is
            if not (folder / params["out"]).exists():
                shutil.copytree(runs / "adult", folder / params["out"])
    shutil.copytree(ROOT / "examples", folder / "examples")
    return folder


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.name in RUN_HERE], ids=str)
def test_cheap_command_runs_as_written(command, workspace, data_dir, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    argv = [*command.argv, *SMALLER.get(command.name, [])]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = main(argv)
    out = printed.getvalue() + capsys.readouterr().out
    assert code == 0, f"{command}: exit {code}\n{out[-2000:]}\n{capsys.readouterr().err}"
    params = parse(command.argv).params if command.name != "--version" else {}
    if command.name == "report":
        report = Path(params["out"] or Path(params["run"]) / "report")
        for kind in params["formats"].split(","):
            assert (report / f"report.{kind}").stat().st_size > 1000, kind
        if params.get("card"):
            _assert_card_in_markdown(Path(params["card"]), (report / "report.md").read_text(encoding="utf-8"))
    if params.get("plot"):
        assert list(Path(params["plot"]).parent.glob(Path(params["plot"]).stem + "*")), params["plot"]


def _assert_card_in_markdown(card: Path, md: str) -> None:
    from markdown_it import MarkdownIt

    from scrutiny.reports.render import load_card

    shown = MarkdownIt("commonmark").render(next(p for p in re.split(r"(?m)^## ", md) if p.split("\n", 1)[0].endswith("Model card")))
    text = " ".join(re.sub(r"<[^>]+>", " ", shown).replace("&lt;", "<").replace("&gt;", ">").split())
    for key, value in load_card(card).items():
        for item in value if isinstance(value, list) else [value]:
            assert " ".join(item.split()) in text, key


def test_example_card_loads_with_every_key():
    from scrutiny.reports.render import load_card

    text = README.read_text(encoding="utf-8")
    assert "examples/card.toml" in text
    card = load_card(ROOT / "examples" / "card.toml")
    assert set(card) == {"intended_use", "out_of_scope", "owner", "limitations"}
    assert all(isinstance(card[k], str) and card[k] for k in ("intended_use", "out_of_scope", "owner"))
    assert card["limitations"] and all(isinstance(item, str) for item in card["limitations"])
    for key in card:  # the README documents every key the example uses
        assert f"`{key}`" in text, key
