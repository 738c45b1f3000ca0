"""The ``scrutiny`` command line: bad input gives one ``error:`` line and exit code 2, never a
traceback or a half-written folder; the happy paths train, evaluate and fetch."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scrutiny.cli import main
from scrutiny.models import DATASETS, RAW_FILES

FAST = ["--epochs", "3", "--device", "cpu"]

SPEC = """
label = "approved"
favourable = "yes"
drop = ["applicant_id"]

[protected]
sex = ["male"]
age = { min = 25 }
"""


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, *fragments, out_dir: Path | None = None) -> str:
    """Exit code 2, one ``error:`` line on stderr naming every fragment, no traceback, and
    (with ``out_dir``) no output folder or hidden staging sibling left behind."""
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and len(lines[0]) > len("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert code == 2
    if out_dir is not None:
        assert not out_dir.exists()
        assert sorted(out_dir.parent.glob(f".{out_dir.name}*")) == []
    return lines[0]


def accuracy_in(output: str) -> str:
    match = re.search(r"\baccuracy\W+([0-9]+\.[0-9]+)", output)
    assert match, output
    return match.group(1)


def make_table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = rng.normal(size=n).round(3)
    return pd.DataFrame({
        "applicant_id": np.arange(n),
        "score": score,
        "region": rng.choice(["north", "south", "east"], size=n),
        "sex": rng.choice(["female", "male"], size=n),
        "age": rng.integers(18, 70, size=n),
        "approved": np.where(score > 0, "yes", "no"),
    })


def write_table(folder: Path, frame: pd.DataFrame, spec: str = SPEC) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    data, spec_path = folder / "loans.csv", folder / "loans.toml"
    frame.to_csv(data, index=False)
    spec_path.write_text(spec)
    return data, spec_path


@pytest.fixture(scope="module")
def cli_checkpoint(data_dir, tmp_path_factory):
    """(checkpoint folder, stdout, stderr, exit code) of one ``scrutiny train`` on breast_cancer."""
    out = tmp_path_factory.mktemp("cli") / "bc"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["train", "--data", "breast_cancer", "--out", str(out), "--seed", "0", *FAST])
    return out, stdout.getvalue(), stderr.getvalue(), code


@pytest.fixture
def checkpoint_copy(cli_checkpoint, tmp_path) -> Path:
    return Path(shutil.copytree(cli_checkpoint[0], tmp_path / "ckpt"))


# ---------------------------------------------------------------- bad input


def test_unknown_data_set(capsys, tmp_path, data_dir):
    out = tmp_path / "run"
    result = cli(capsys, "train", "--data", "nosuch", "--out", out)
    assert_one_line_error(*result, "unknown data set 'nosuch'", out_dir=out)


def test_missing_raw_file(capsys, tmp_path):
    empty, out = tmp_path / "empty", tmp_path / "run"
    empty.mkdir()
    result = cli(capsys, "train", "--data", "adult", "--data-dir", empty, "--out", out)
    assert_one_line_error(*result, "scrutiny data fetch adult", out_dir=out)


@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda f: f.drop(columns="approved"), "label column 'approved' not found"),
        (lambda f: f.assign(score=f["score"].where(f.index != 3)), "'score' has 1 missing"),
        (lambda f: f.drop(columns="sex"), "protected column 'sex' not found"),
    ],
    ids=["no-label", "nan", "protected-absent"],
)
def test_bad_table(capsys, tmp_path, change, fragment):
    data, spec = write_table(tmp_path / "in", change(make_table()))
    out = tmp_path / "run"
    result = cli(capsys, "train", "--data", data, "--spec", spec, "--out", out, *FAST)
    assert_one_line_error(*result, fragment, "loans.csv", out_dir=out)


def test_csv_without_spec(capsys, tmp_path):
    data, _ = write_table(tmp_path / "in", make_table())
    out = tmp_path / "run"
    result = cli(capsys, "train", "--data", data, "--out", out)
    assert_one_line_error(*result, "--spec", out_dir=out)


def test_spec_for_built_in_data_set(capsys, tmp_path, data_dir):
    _, spec = write_table(tmp_path / "in", make_table())
    out = tmp_path / "run"
    result = cli(capsys, "train", "--data", "breast_cancer", "--spec", spec, "--out", out)
    assert_one_line_error(*result, "--spec", out_dir=out)


@pytest.mark.parametrize("arch,fragment", [("nosuch", "unknown architecture 'nosuch'"), ("cnn", "tabular")])
def test_bad_architecture(capsys, tmp_path, data_dir, arch, fragment):
    out = tmp_path / "run"
    result = cli(capsys, "train", "--data", "breast_cancer", "--arch", arch, "--out", out, *FAST)
    assert_one_line_error(*result, fragment, out_dir=out)


def test_out_exists_without_overwrite(capsys, tmp_path, data_dir):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    result = cli(capsys, "train", "--data", "breast_cancer", "--out", out, *FAST)
    assert_one_line_error(*result, "--overwrite")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(tmp_path.glob(".run*")) == []


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00garbage" * 64)


@pytest.mark.parametrize("damage", [_truncate, _garbage], ids=["truncated", "garbage"])
@pytest.mark.parametrize("rehash", [False, True], ids=["hash-check", "parser"])
def test_corrupt_checkpoint(capsys, checkpoint_copy, damage, rehash):
    weights = checkpoint_copy / "weights.safetensors"
    damage(weights)
    if rehash:
        manifest = json.loads((checkpoint_copy / "manifest.json").read_text())
        manifest["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (checkpoint_copy / "manifest.json").write_text(json.dumps(manifest))
    result = cli(capsys, "evaluate", checkpoint_copy, "--data", "breast_cancer")
    assert_one_line_error(*result, "weights.safetensors")


def test_checkpoint_for_other_features(capsys, cli_checkpoint):
    result = cli(capsys, "evaluate", cli_checkpoint[0], "--data", "german")
    assert_one_line_error(*result, "breast_cancer", "german")


def test_missing_model(capsys, tmp_path, data_dir):
    result = cli(capsys, "evaluate", tmp_path / "nothing-here", "--data", "breast_cancer")
    assert_one_line_error(*result, "nothing-here")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--data", "breast_cancer", "--bogus"], "--bogus"),
        (["train", "--data", "breast_cancer"], "--out"),
        (["train", "--data", "breast_cancer", "--epochs", "0"], "--epochs"),
    ],
    ids=["unknown-option", "missing-option", "bad-value"],
)
def test_usage_error(capsys, tmp_path, args, fragment):
    out = tmp_path / "run"
    if "--out" != fragment:
        args = [*args, "--out", out]
    result = cli(capsys, *args)
    assert_one_line_error(*result, fragment, out_dir=out)


def test_fetch_unknown_name(capsys, tmp_path):
    result = cli(capsys, "data", "fetch", "nosuch", "--data-dir", tmp_path / "d")
    assert_one_line_error(*result, "nosuch")
    assert not (tmp_path / "d").exists()


def test_fetch_from_empty_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli(capsys, "data", "fetch", "adult", "--from", empty, "--data-dir", tmp_path / "d")
    assert_one_line_error(*result, "adult.data")
    assert not (tmp_path / "d").exists()


def test_console_script_exits_2_without_traceback(tmp_path):
    script = shutil.which("scrutiny") or str(Path(sys.executable).parent / "scrutiny")
    out = tmp_path / "run"
    run = subprocess.run([script, "train", "--data", "nosuch", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 2
    assert_one_line_error(run.returncode, run.stdout, run.stderr, "unknown data set 'nosuch'", out_dir=out)


def _help(capsys, command: str) -> str:
    """``scrutiny COMMAND --help`` with the wrapping undone."""
    code, out, err = cli(capsys, command, "--help")
    assert code == 0, err
    return " ".join(out.split())


def test_help_lists_what_the_registries_hold(capsys):
    """The methods, attacks and per-data-type defaults in --help come from the registries: one
    added there is listed without editing the CLI."""
    from scrutiny.audit.attributions.registry import METHOD_INFO
    from scrutiny.audit.robustness.registry import ATTACK_INFO, DEFAULT_ATTACKS
    from scrutiny.modality import MODALITIES

    explain = _help(capsys, "explain")
    for info in METHOD_INFO.values():
        assert re.search(rf"[:,] {info.name}\b", explain), info.name
        for alias in info.aliases:
            assert re.search(rf"{info.name} \({alias}\b", explain), alias
    assert "occlusion (images only)" in explain
    attack = _help(capsys, "attack")
    for name, info in ATTACK_INFO.items():
        assert re.search(rf"{name}\b[^;]*\({info.kind.replace('noise', 'noise baselines')}\)", attack), name
    assert f"[default: {','.join(DEFAULT_ATTACKS)}]" in attack
    train = _help(capsys, "train")
    for m in MODALITIES.values():
        assert f"{','.join(f'{e:g}' for e in m.default_eps)} for {m.plural} ({m.eps_unit})" in attack
        assert f"{m.default_arch} for {m.plural}" in train


# ---------------------------------------------------------------- happy paths


def test_train_writes_checkpoint_and_prints_accuracy(cli_checkpoint):
    out, stdout, stderr, code = cli_checkpoint
    assert code == 0, stderr
    assert "Traceback" not in stdout + stderr
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "weights.safetensors"]
    assert sorted(out.parent.glob(f".{out.name}*")) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["training"]["epochs"] == 3
    assert manifest["dataset"]["name"] == "breast_cancer"
    assert accuracy_in(stdout) == f"{manifest['metrics']['accuracy']:.4f}"
    assert str(out) in stdout.replace("\n", "")


def test_evaluate_reproduces_manifest_metrics(capsys, cli_checkpoint):
    out = cli_checkpoint[0]
    code, stdout, stderr = cli(capsys, "evaluate", out, "--data", "breast_cancer")
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert accuracy_in(stdout) == f"{manifest['metrics']['accuracy']:.4f}"
    assert re.search(r"^\W*n\W+143\W*$", stdout, re.MULTILINE)  # the table row, not the title


def test_train_overwrite(capsys, cli_checkpoint, tmp_path):
    out = Path(shutil.copytree(cli_checkpoint[0], tmp_path / "bc"))
    before = (out / "weights.safetensors").read_bytes()
    code, stdout, stderr = cli(capsys, "train", "--data", "breast_cancer", "--out", out, "--seed", "1",
                               "--overwrite", *FAST)
    assert code == 0, stderr
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert (out / "weights.safetensors").read_bytes() != before
    assert sorted(tmp_path.glob(".bc*")) == []


def test_fetch_from_folder(capsys, tmp_path, data_dir):
    target = tmp_path / "data"
    code, stdout, stderr = cli(capsys, "data", "fetch", "adult", "--from", data_dir / "adult", "--data-dir", target)
    assert code == 0, stderr
    assert sorted(p.name for p in (target / "adult").iterdir()) == sorted(RAW_FILES["adult"])
    for name, (_, sha256) in RAW_FILES["adult"].items():
        assert hashlib.sha256((target / "adult" / name).read_bytes()).hexdigest() == sha256
    assert "adult" in stdout


def test_data_list(capsys, data_dir, tmp_path):
    code, stdout, _ = cli(capsys, "data", "list", "--data-dir", data_dir)
    assert code == 0
    for name in DATASETS:
        assert name in stdout
    assert stdout.count("ready") == len(DATASETS)

    code, stdout, _ = cli(capsys, "data", "list", "--data-dir", tmp_path)
    assert code == 0
    assert stdout.count("ready") == len(DATASETS) - len(RAW_FILES)
    assert stdout.count("fetch") == len(RAW_FILES)


def test_train_and_evaluate_user_table(capsys, tmp_path):
    data, spec = write_table(tmp_path / "in", make_table())
    out = tmp_path / "run"
    code, stdout, stderr = cli(capsys, "train", "--data", data, "--spec", spec, "--out", out, "--seed", "0", *FAST)
    assert code == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    saved = manifest["dataset"]["spec"]
    assert manifest["dataset"]["name"] == "loans"
    assert saved["label"] == "approved" and saved["favourable_label"] == "yes"
    assert saved["protected"] == [
        {"name": "sex", "privileged_values": ["male"], "privileged_min": None},
        {"name": "age", "privileged_values": [], "privileged_min": 25.0},
    ]
    assert [f["name"] for f in saved["features"]] == ["score", "region", "sex", "age"]
    assert {f["name"]: f["kind"] for f in saved["features"]}["region"] == "categorical"
    assert accuracy_in(stdout) == f"{manifest['metrics']['accuracy']:.4f}"

    code, stdout, stderr = cli(capsys, "evaluate", out, "--data", data, "--spec", spec)
    assert code == 0, stderr
    assert accuracy_in(stdout) == f"{manifest['metrics']['accuracy']:.4f}"
