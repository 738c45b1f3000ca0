"""The public API, used as a notebook user would: only names scrutiny exports (``__all__``).

- ``scrutiny.__version__`` is the installed distribution's version, and the CLI prints it;
- every exported function is typed and documented with an example, and the examples that
  need no files run;
- ``run_audit`` takes a plain ``nn.Module``, writes nothing until ``result.save``, and
  ``save`` writes the run folder the CLI writes (the same files, byte for byte);
- wrong argument types raise TypeError; library errors name parameters, never CLI flags;
- README's Python example runs as written.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from importlib import metadata
from pathlib import Path

import pytest

import scrutiny
import scrutiny.audit
import scrutiny.audit.attributions
import scrutiny.audit.fairness
import scrutiny.audit.performance
import scrutiny.audit.robustness
import scrutiny.models

README = Path(__file__).resolve().parents[1] / "README.md"
PUBLIC = (scrutiny, scrutiny.models, scrutiny.audit, scrutiny.audit.performance, scrutiny.audit.attributions,
          scrutiny.audit.robustness, scrutiny.audit.fairness)
CHEAP = {"families": ["performance", "attributions", "robustness"],
         "attributions": {"methods": ["integrated_gradients", "kernel_shap"], "samples": 12, "quality": False,
                          "n_boot": 50},
         "robustness": {"attacks": ["pgd", "gaussian"], "samples": 30, "steps": 5, "detector": False}}
CHEAP_TOML = """families = ["performance", "attributions", "robustness"]
[attributions]
methods = ["integrated_gradients", "kernel_shap"]
samples = 12
quality = false
n_boot = 50
[robustness]
attacks = ["pgd", "gaussian"]
samples = 30
steps = 5
detector = false
"""


def test_version_is_the_installed_distributions(capsys):
    from scrutiny.cli import main

    assert scrutiny.__version__ == metadata.version("scrutiny")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"scrutiny {scrutiny.__version__}\n"


@pytest.mark.parametrize("module", PUBLIC, ids=lambda m: m.__name__)
def test_every_exported_name_resolves_typed_and_documented(module):
    assert module.__doc__ and set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        value = getattr(module, name)
        if name.isupper() or name.startswith("__"):  # constants (registries) and __version__
            continue
        assert inspect.getdoc(value), f"{module.__name__}.{name} has no docstring"
        if inspect.isfunction(value):
            signature = inspect.signature(value)
            untyped = [p for p, parameter in signature.parameters.items()
                       if parameter.annotation is inspect.Parameter.empty]
            assert not untyped, f"{module.__name__}.{name}: parameters without a type: {untyped}"
            assert signature.return_annotation is not inspect.Signature.empty, f"{module.__name__}.{name}: no return type"


def test_top_level_names_are_the_same_objects_as_their_homes():
    assert scrutiny.run_audit is scrutiny.audit.run_audit
    assert scrutiny.load_dataset is scrutiny.models.load_dataset
    assert scrutiny.attribute is scrutiny.audit.attributions.attribute
    assert issubclass(scrutiny.InputError, scrutiny.ScrutinyError) and issubclass(scrutiny.InputError, ValueError)


@pytest.fixture(scope="module")
def cancer():
    data = scrutiny.load_dataset("breast_cancer")
    return data, scrutiny.train_on(data, epochs=3, progress=False)


def test_run_audit_on_a_plain_module_writes_nothing_until_saved(cancer, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from scrutiny.audit.attributions import AttributionsDetails
    from scrutiny.audit.performance import PerformanceDetails
    from scrutiny.audit.robustness import RobustnessDetails

    data, trained = cancer
    monkeypatch.chdir(tmp_path)
    result = scrutiny.run_audit(trained.model, data, config=CHEAP, progress=False)
    assert os.listdir(tmp_path) == [] and result.path is None
    assert [type(result.details[f]) for f in ("performance", "attributions", "robustness")] == [
        PerformanceDetails, AttributionsDetails, RobustnessDetails]
    assert all(isinstance(f, Figure) for f in result.figures.values())
    assert {"figures/importance.png", "figures/robustness.png"} <= set(result.figures)
    assert {f.family for f in result.findings} == {"performance", "attributions", "robustness"}
    assert result.verdict in ("pass", "warn", "fail") and sum(result.counts.values()) == len(result.findings)
    accuracy = next(f for f in result.findings if f.check == "performance.balanced_accuracy")
    assert accuracy.value == result.details["performance"].balanced_accuracy.value > 0.8
    assert result.manifest["model"]["kind"] == "module" and len(result.manifest["model"]["weights_sha256"]) == 64

    path = result.save(tmp_path / "run")
    assert path == tmp_path / "run" == result.path and os.listdir(tmp_path) == ["run"]
    run = scrutiny.load_run(path)
    from scrutiny.audit.run.run_folder import to_json

    assert (path / "findings.json").read_text(encoding="utf-8") == to_json(result.document)
    for family in run.families:
        assert to_json(run.details(family).to_dict()) == to_json(result.details[family].to_dict())
    with pytest.raises(scrutiny.InputError, match="already exists"):
        result.save(path)  # an existing run is replaced only when asked


def test_save_writes_what_the_cli_writes(cancer, tmp_path):
    from scrutiny.cli import main
    from scrutiny.models import save_checkpoint

    data, trained = cancer
    checkpoint = save_checkpoint(tmp_path / "ck", model=trained.model, dataset=data, metrics=trained.metrics,
                                 training=trained.settings, seed=0)
    (tmp_path / "audit.toml").write_text(CHEAP_TOML)
    assert main(["audit", str(checkpoint), "--data", "breast_cancer", "--config", str(tmp_path / "audit.toml"),
                 "--out", str(tmp_path / "cli")]) in (0, 1)
    result = scrutiny.run_audit(checkpoint, "breast_cancer", config=tmp_path / "audit.toml", progress=False)
    result.save(tmp_path / "api")
    cli, api = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("cli", "api"))
    assert cli["files"] == api["files"]  # every file, figures and arrays included, byte for byte
    assert (tmp_path / "cli" / "findings.json").read_bytes() == (tmp_path / "api" / "findings.json").read_bytes()
    assert set(cli) == set(api) and cli["config"] == api["config"] and cli["model"]["weights_sha256"] == api["model"][
        "weights_sha256"]


def test_wrong_argument_types_raise_type_error(cancer, tmp_path):
    data, trained = cancer
    calls = [
        lambda: scrutiny.run_audit(42, data),
        lambda: scrutiny.run_audit(trained.model, 42),
        lambda: scrutiny.run_audit(trained.model, data, config=42),
        lambda: scrutiny.run_audit(trained.model, data, policy=[1]),
        lambda: scrutiny.load_model(42),
        lambda: scrutiny.load_run(42),
        lambda: scrutiny.load_policy(42),
        lambda: scrutiny.attribute("not a model", data.test.X, method="integrated_gradients", space=None,
                                   background=None),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            call()
    assert not any(tmp_path.iterdir())


def test_library_errors_name_parameters_not_cli_flags(cancer, tmp_path):
    data, trained = cancer
    (tmp_path / "empty").mkdir()
    calls = {
        "source": lambda: scrutiny.models.fetch("german", directory=tmp_path / "d", source=tmp_path / "empty",
                                                force=True),
        "samples": lambda: scrutiny.run_audit(trained.model, data, config={"attributions": {"samples": 0}}),
        "families": lambda: scrutiny.run_audit(trained.model, data, config={"families": ["nope"]}),
    }
    for parameter, call in calls.items():
        with pytest.raises(scrutiny.ScrutinyError) as raised:
            call()
        message = str(raised.value)
        assert not re.search(r"(^|\s)--[a-z]", message), message
        assert parameter in message or "source" in message, message


def _readme_python() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]


def test_readme_python_example_runs(data_dir, tmp_path, monkeypatch):
    """README's example as written (German credit, after `scrutiny data fetch german`): the
    audit writes nothing until ``result.save``, which writes a complete run folder."""
    code = _readme_python()
    body, save = code.rsplit("\nresult.save(", 1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(body, "README.md (Python API)", "exec"), namespace)
    assert os.listdir(tmp_path) == []
    assert namespace["robustness"].gated_eps > 0 and namespace["worst"]
    exec(compile("result.save(" + save, "README.md (Python API)", "exec"), namespace)
    run = scrutiny.load_run(tmp_path / "runs" / "german-mlp")
    assert run.families == ["performance", "attributions", "robustness", "fairness"]
    assert run.findings["verdict"] == namespace["result"].verdict


@pytest.mark.parametrize("module", ["scrutiny.models.architectures", "scrutiny.models.data_files",
                                    "scrutiny.audit.run.config", "scrutiny.lazy"])
def test_docstring_examples_that_need_no_files_run(module):
    """The examples not marked ``+SKIP`` (those that need a data set or a checkpoint on disk) run as written."""
    import doctest
    import importlib

    results = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert results.failed == 0


def test_every_public_function_shows_an_example():
    for module in PUBLIC:
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.isfunction(value):
                assert "Example:" in (inspect.getdoc(value) or ""), f"{module.__name__}.{name}: no example"


def test_run_audit_refuses_an_out_that_holds_its_config_or_policy_before_any_work(cancer, tmp_path):
    """The files given as config and policy are inputs: an ``out`` that would replace them is
    refused before the audit runs, and nothing is written or deleted."""
    data, trained = cancer
    for name, kwargs in (("config", {"config": "audit.toml"}), ("policy", {"policy": "policy.toml"})):
        out = tmp_path / name
        out.mkdir()
        given = out / next(iter(kwargs.values()))
        given.write_text(CHEAP_TOML if name == "config" else "version = 1\n")
        with pytest.raises(scrutiny.InputError, match="contains the input"):
            scrutiny.run_audit(trained.model, data, out=out, overwrite=True,
                               **{k: given for k in kwargs}, **({"config": CHEAP} if name == "policy" else {}))
        assert os.listdir(out) == [given.name]
