"""Hostile models, manifests, tables and configs: each is refused before any work with one
``error:`` line naming the culprit (file and key or column), exit code 2, no traceback and
nothing written.

Every case runs through ``scrutiny.cli.main``; a few also through the installed
``scrutiny`` console script, so that the real entry point is covered (a factory that raises
``SystemExit(0)`` once made ``scrutiny audit`` exit 0 with no run written).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from scrutiny.cli import main
from scrutiny.errors import CheckpointError, InputError

CHEAP_CONFIG = 'families = ["performance"]\n'


# ---------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _refused(code: int, out: str, err: str, *fragments: str) -> str:
    """The one ``error:`` line, after checking the exit code, the fragments and that no
    traceback was printed."""
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("error: "), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert code == 2, (code, line)
    return line


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """An empty current folder; a refused command must leave it empty."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    yield folder
    assert sorted(p.name for p in folder.iterdir()) == [], "a refused command wrote something"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def checkpoint(trained) -> Path:
    return trained("breast_cancer", "mlp")[2]


def _edited(checkpoint: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``checkpoint`` whose manifest ``edit(manifest)`` changed (or replaced, if it
    returns a value)."""
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    replaced = edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest if replaced is None else replaced))
    return folder


def _set(path: str, value):
    """An edit that sets the manifest entry at the dotted ``path``."""

    def edit(manifest):
        *parents, last = path.split(".")
        node = manifest
        for key in parents:
            node = node[key]
        node[last] = value

    return edit


# ---------------------------------------------------------------- manifests

MANIFEST_CASES = {
    "json-list": (lambda m: [m], ["not a checkpoint manifest: expected a JSON object", "got a JSON list"]),
    "means-text": (_set("preprocessing.means", "oops"), ["'preprocessing'", "'means'", "'oops'"]),
    "scale-zero": (_set("preprocessing.scales.mean radius", 0),
                   ["'preprocessing'", "'scales' of 'mean radius'", "> 0"]),
    "categories-number": (_set("preprocessing.categories", 7), ["'preprocessing'", "'categories'"]),
    "spec-features-int": (_set("dataset.spec.features", 5), ["'dataset.spec'", "'features'", "got 5"]),
    "spec-feature-kind": (lambda m: m["dataset"]["spec"]["features"][0].update(kind="colour"),
                          ["'dataset.spec'", "'features[0]'", "colour"]),
    "spec-classes-text": (_set("dataset.spec.classes", "ab"), ["'dataset.spec'", "'classes'"]),
    "architecture-text": (_set("architecture", "mlp"), ["'architecture' must be a JSON object"]),
    "no-input-shape": (_set("architecture.config", {"hidden": [8]}), ["'architecture'", "input_shape"]),
    "hidden-float-huge": (_set("architecture.config.hidden", [1e7, 1e7]), ["'architecture': hidden", "10000000.0"]),
    "hidden-int-huge": (_set("architecture.config.hidden", [10**7, 10**7]),
                        ["'architecture': ", "more than 2,000,000,000 parameters", "hidden"]),
    "hidden-negative": (_set("architecture.config.hidden", [-5]), ["'architecture': hidden", "-5"]),
    "hidden-text": (_set("architecture.config.hidden", ["wide"]), ["'architecture': hidden", "wide"]),
    "input-shape-float-huge": (_set("architecture.config.input_shape", [1e12]), ["'architecture': ", "input_shape", "1000000000000.0"]),
    "input-shape-int-huge": (_set("architecture.config.input_shape", [10**12]),
                             ["'architecture': ", "more than 2,000,000,000 parameters", "input_shape"]),
}


@pytest.mark.parametrize("case", list(MANIFEST_CASES))
def test_corrupt_manifest_is_refused_before_the_model_is_built(case, checkpoint, tmp_path, work, capsys):
    edit, fragments = MANIFEST_CASES[case]
    folder = _edited(checkpoint, tmp_path, edit)
    code, out, err = cli(capsys, "evaluate", folder, "--data", "breast_cancer")
    line = _refused(code, out, err, str(folder / "manifest.json"), *fragments)
    if "parameters" in " ".join(fragments):
        # the count in the message is the one the layer sizes give, computed here independently
        config = json.loads((folder / "manifest.json").read_text())["architecture"]["config"]
        widths = [math.prod(config["input_shape"]), *config["hidden"]]
        linear = sum(a * b for a, b in zip(widths, widths[1:])) + 2 * sum(config["hidden"])  # + BatchNorm
        expected = linear + widths[-1] * 2 + 2  # head
        assert f"({expected:,})" in line


def _nan_weights(checkpoint: Path, tmp_path: Path) -> Path:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan-ck"
    shutil.copytree(checkpoint, folder)
    state = load_file(str(folder / "weights.safetensors"))
    state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(folder / "weights.safetensors"))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["weights_sha256"] = _sha256(folder / "weights.safetensors")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_nan_weights_are_refused_by_evaluate(checkpoint, tmp_path, work, capsys):
    folder = _nan_weights(checkpoint, tmp_path)
    code, out, err = cli(capsys, "evaluate", folder, "--data", "breast_cancer")
    _refused(code, out, err, f"{folder}: ", "non-finite logits (NaN)", "'breast_cancer'", "8 of 8 test rows")


def test_nan_weights_are_refused_by_audit_with_no_run_written(checkpoint, tmp_path, work, capsys):
    folder = _nan_weights(checkpoint, tmp_path)
    config = tmp_path / "cfg.toml"
    config.write_text(CHEAP_CONFIG)
    code, out, err = cli(capsys, "audit", folder, "--data", "breast_cancer", "--out", "run", "--config", config)
    _refused(code, out, err, f"{folder}: ", "non-finite logits (NaN)")


# ---------------------------------------------------------------- factories and TorchScript

FACTORIES = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, fill=None, raise_above=None):
        super().__init__()
        self.linear = nn.Linear({width}, 2)
        self.fill, self.raise_above = fill, raise_above

    def forward(self, x):
        if self.raise_above is not None and len(x) > self.raise_above:
            raise RuntimeError("boom inside forward")
        out = self.linear(x)
        return out if self.fill is None else out * 0 + self.fill


def ok():
    return Net()


def nan_model():
    return Net(fill=float("nan"))


def inf_model():
    return Net(fill=float("inf"))


def slow_raise():  # passes a probe of two rows, fails on more
    return Net(raise_above=2)


def late_raise():  # passes the probe of eight rows, fails on the whole test split
    return Net(raise_above=8)


def raises():
    raise RuntimeError("factory exploded")


def needs_arg(size):
    return Net()


def sysexit():
    raise SystemExit(0)


def generator_exit():
    raise GeneratorExit()
"""


@pytest.fixture
def factories(tmp_path, monkeypatch, load):
    """(module name, weights file of its ``ok`` model, folder on sys.path) for breast_cancer."""
    site = tmp_path / "site"
    site.mkdir()
    name = f"evilmods_{uuid.uuid4().hex[:10]}"
    (site / f"{name}.py").write_text(FACTORIES.format(width=load("breast_cancer").preprocessor.n_encoded))
    (site / f"{name}_import.py").write_text('raise RuntimeError("module-level setup failed")\n')
    monkeypatch.syspath_prepend(str(site))
    import importlib

    from safetensors.torch import save_file

    weights = tmp_path / "w_ok.safetensors"
    save_file(dict(importlib.import_module(name).ok().state_dict()), str(weights))
    yield name, weights, site
    for module in (name, f"{name}_import"):
        sys.modules.pop(module, None)


FACTORY_CASES = {
    "raises": ["raised RuntimeError: factory exploded"],
    "needs_arg": ["raised TypeError", "size"],
    "sysexit": ["raised SystemExit(0)"],
    "generator_exit": ["raised GeneratorExit"],
    "nan_model": ["non-finite logits (NaN)"],
    "inf_model": ["non-finite logits (inf)"],
    "slow_raise": ["model raised RuntimeError: boom inside forward on 8 test rows"],
    # raised after loading, by evaluate's predict_proba, which knows the model but not its source
    "late_raise": ["model Net raised RuntimeError: boom inside forward on a batch of"],
}


@pytest.mark.parametrize("factory", list(FACTORY_CASES))
def test_factory_failures_are_model_errors(factory, factories, work, capsys):
    name, weights, _ = factories
    code, out, err = cli(capsys, "evaluate", f"{name}:{factory}", "--weights", weights, "--data", "breast_cancer")
    named = [] if factory == "late_raise" else [f"{name}:{factory}"]
    line = _refused(code, out, err, *named, *FACTORY_CASES[factory])
    if factory in ("raises", "needs_arg", "sysexit", "generator_exit"):
        assert f"model factory '{name}:{factory}'" in line


def test_factory_module_that_raises_on_import(factories, work, capsys):
    name, weights, _ = factories
    code, out, err = cli(capsys, "evaluate", f"{name}_import:ok", "--weights", weights, "--data", "breast_cancer")
    _refused(code, out, err, f"model factory '{name}_import:ok'", "raised RuntimeError: module-level setup failed")


def test_factory_sysexit_fails_an_audit_with_no_run_written(factories, tmp_path, work, capsys):
    name, weights, _ = factories
    config = tmp_path / "cfg.toml"
    config.write_text(CHEAP_CONFIG)
    code, out, err = cli(capsys, "audit", f"{name}:sysexit", "--weights", weights, "--data", "breast_cancer",
                         "--out", "run", "--config", config)
    _refused(code, out, err, "SystemExit(0)")


class _NanScript(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.linear = nn.Linear(width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float("nan")


def test_torchscript_with_nan_logits(load, tmp_path, work, capsys):
    path = tmp_path / "nan_ts.pt"
    torch.jit.save(torch.jit.script(_NanScript(load("breast_cancer").preprocessor.n_encoded)), str(path))
    code, out, err = cli(capsys, "evaluate", path, "--data", "breast_cancer")
    _refused(code, out, err, f"{path}: ", "non-finite logits (NaN)")


def test_a_model_that_raises_later_is_a_checkpoint_error_in_predict_proba(load):
    from scrutiny.models.training import predict_proba

    class LateRaise(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        def forward(self, x):
            if len(x) > 4:
                raise ValueError("cannot take so many rows")
            return self.linear(x)

    X = np.zeros((10, 3), dtype=np.float32)
    assert predict_proba(LateRaise(), X[:4]).shape == (4, 2)
    with pytest.raises(CheckpointError, match=r"LateRaise raised ValueError: cannot take so many rows on a batch "
                                              r"of 10 rows \(rows 0 to 9\)"):
        predict_proba(LateRaise(), X)


# ---------------------------------------------------------------- user tables

SPEC = 'label = "approved"\nfavourable = "yes"\n'


def _table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(18, 80, n), "income": rng.normal(50, 10, n).round(2),
                         "sex": rng.choice(["female", "male"], n), "approved": np.resize(["yes", "no"], n)})


def _train(capsys, tmp_path, csv_text: str, spec_text: str = SPEC, name: str = "loans"):
    data, spec = tmp_path / f"{name}.csv", tmp_path / f"{name}.toml"
    data.write_text(csv_text)
    spec.write_text(spec_text)
    return data, spec, cli(capsys, "train", "--data", data, "--spec", spec, "--out", "ck", "--epochs", "1")


def test_table_too_small_for_a_stratified_split(tmp_path, work, capsys):
    frame = pd.DataFrame({"age": [30, 40, 50], "approved": ["yes", "no", "yes"]})
    data, _, (code, out, err) = _train(capsys, tmp_path, frame.to_csv(index=False))
    counts = frame["approved"].value_counts()  # the counts the message must give
    _refused(code, out, err, str(data), "3 rows are too few", f"{counts['yes']} of 'yes'", f"{counts['no']} of 'no'",
             "at least 2 rows")


def test_infinite_values_name_the_columns_and_counts(tmp_path, work, capsys):
    text = _table().to_csv(index=False).splitlines()
    text[3] = "inf," + text[3].split(",", 1)[1]
    text[5] = text[5].split(",")[0] + ",5e309," + ",".join(text[5].split(",")[2:])
    text[6] = text[6].split(",")[0] + ",-inf," + ",".join(text[6].split(",")[2:])
    csv_text = "\n".join(text) + "\n"
    parsed = pd.read_csv(io.StringIO(csv_text))
    expected = {c: int(np.isinf(parsed[c]).sum()) for c in ("age", "income")}  # pandas' own reading
    assert expected == {"age": 1, "income": 2}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, _, (code, out, err) = _train(capsys, tmp_path, csv_text)
    _refused(code, out, err, str(data), "infinite values", f"'age' ({expected['age']})",
             f"'income' ({expected['income']})")
    # numpy's RuntimeWarnings (a mean over inf) once reached the user before the error
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught


def test_spec_that_drops_every_feature(tmp_path, work, capsys):
    frame = _table()
    features = [c for c in frame.columns if c != "approved"]
    spec_text = SPEC + f"drop = {json.dumps(features)}\n"
    _, spec, (code, out, err) = _train(capsys, tmp_path, frame.to_csv(index=False), spec_text)
    _refused(code, out, err, str(spec), "no feature columns left after drop", *features)


def test_duplicate_column_names_in_the_header(tmp_path, work, capsys):
    frame = _table()
    header = "age,income,age,approved"
    rows = [f"{a},{i},{a + 1},{y}" for a, i, y in zip(frame["age"], frame["income"], frame["approved"])]
    data, _, (code, out, err) = _train(capsys, tmp_path, "\n".join([header, *rows]) + "\n")
    _refused(code, out, err, str(data), "repeats column name(s) 'age' (2 times)")


@pytest.mark.parametrize("extra, key", [('[protected]\napproved = ["yes"]\n', "[protected]"),
                                        ('drop = ["approved"]\n', "'drop'")])
def test_label_listed_as_protected_or_dropped(tmp_path, work, capsys, extra, key):
    _, spec, (code, out, err) = _train(capsys, tmp_path, _table().to_csv(index=False), SPEC + extra)
    _refused(code, out, err, str(spec), key, "label column 'approved'")


# ---------------------------------------------------------------- audit configs

CONFIG_CASES = {
    "seed-huge": ("seed = 18446744073709551616\n", ["'seed' must be from 0 to 4,294,967,295",
                                                    "got 18,446,744,073,709,551,616"]),
    "seed-negative": ("seed = -1\n", ["'seed' must be from 0 to 4,294,967,295, got -1"]),
    "eps-nan": ("[robustness]\neps = [0.25, nan]\n", ["'robustness.eps' must be a finite number, got nan"]),
    "eps-inf": ("[robustness]\neps = [inf]\n", ["'robustness.eps' must be a finite number, got inf"]),
    "confidence-nan": ("[fairness]\nconfidence = nan\n", ["'fairness.confidence' must be a finite number"]),
    "samples-huge": ("[attributions]\nsamples = 1000000000000\n",
                     ["'attributions.samples' must be from 1 to 10,000,000"]),
    "steps-huge": ("[robustness]\nsteps = 1000000000000\n", ["'robustness.steps' must be from 1 to 100,000"]),
    "boot-huge": ("[fairness]\nn_boot = 1000000000\n", ["'fairness.n_boot' must be from 0 to 100,000"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_bad_config_values_name_the_key_in_the_file(case, checkpoint, tmp_path, work, capsys, monkeypatch):
    text, fragments = CONFIG_CASES[case]
    config = tmp_path / "cfg.toml"
    config.write_text(text)
    import scrutiny.models

    monkeypatch.setattr(scrutiny.models, "load_model", lambda *a, **k: pytest.fail("model loaded before the config"))
    code, out, err = cli(capsys, "audit", checkpoint, "--data", "breast_cancer", "--out", "run", "--config", config)
    line = _refused(code, out, err, f"config {config}: ", *fragments)
    assert "--" not in line.replace(str(config), "")  # the user never gave a flag for it


# ---------------------------------------------------------------- library functions, in library words


def test_library_functions_bound_seeds_and_counts(trained):
    from scrutiny.audit.attributions.explain import explain
    from scrutiny.audit.fairness.assess import assess_fairness
    from scrutiny.audit.robustness.assess import assess_robustness
    from scrutiny.models import train_on

    dataset, result, _ = trained("breast_cancer", "mlp")
    calls = [
        (lambda: train_on(dataset, "mlp", seed=-1, progress=False), "'seed' must be from 0 to 4,294,967,295, got -1"),
        (lambda: train_on(dataset, "mlp", seed=2**70, progress=False), "'seed' must be from 0 to 4,294,967,295"),
        (lambda: train_on(dataset, "mlp", epochs=10**23, progress=False), "'epochs' must be from 1 to 100,000"),
        (lambda: explain(result.model, dataset, methods=["saliency"], samples=0), "'samples' must be from 1"),
        (lambda: explain(result.model, dataset, methods=["saliency"], seed=-1), "'seed' must be from 0"),
        (lambda: assess_robustness(result.model, dataset, steps=0), "'steps' must be from 1"),
        (lambda: assess_robustness(result.model, dataset, queries=10**12), "'queries' must be from 1 to 10,000,000"),
        (lambda: assess_robustness(result.model, dataset, seed=-1), "'seed' must be from 0"),
        (lambda: assess_fairness(result.model, dataset, n_boot=10**9), "'n_boot' must be from 0 to 100,000"),
        (lambda: assess_fairness(result.model, dataset, seed=-1), "'seed' must be from 0"),
    ]
    for call, message in calls:
        with pytest.raises(InputError) as info:
            call()
        assert str(info.value).startswith(message), (message, str(info.value))
        assert "--" not in str(info.value)


# ---------------------------------------------------------------- the installed console script


def _console(args: list, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    script = shutil.which("scrutiny")
    assert script, "the scrutiny console script is not installed (pip install -e .)"
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run([script, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_console_script_refuses_hostile_inputs(checkpoint, factories, tmp_path, work):
    name, weights, site = factories
    config = tmp_path / "cfg.toml"
    config.write_text(CHEAP_CONFIG)
    huge_seed = tmp_path / "seed.toml"
    huge_seed.write_text("seed = 18446744073709551616\n")
    listed = _edited(checkpoint, tmp_path, lambda m: [m])
    cases = [
        (["audit", f"{name}:sysexit", "--weights", weights, "--data", "breast_cancer", "--out", "run",
          "--config", config], ["SystemExit(0)"]),
        (["evaluate", listed, "--data", "breast_cancer"], ["not a checkpoint manifest", str(listed / "manifest.json")]),
        (["audit", checkpoint, "--data", "breast_cancer", "--out", "run", "--config", huge_seed],
         [f"config {huge_seed}: 'seed' must be from 0 to 4,294,967,295"]),
    ]
    for args, fragments in cases:
        done = _console(args, cwd=work, pythonpath=site)
        _refused(done.returncode, done.stdout, done.stderr, *fragments)
