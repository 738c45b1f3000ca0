"""The ``scrutiny`` command line under hostile input: out-of-range seeds and counts, model code
that exits or raises, signals, a busy port. Each bad input ends in exit code 2 (130 when
interrupted) with one ``error:`` line naming the option or value, no traceback, and nothing
written in the folder it ran in. The start-up surface too: ``--version``, flags shown as
flags, no heavy import before a command needs it, whole paths at 80 columns, ``data
columns``, and ``module:factory`` models imported from the current folder."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import scrutiny.cli as cli_module
from scrutiny.cli import main
from scrutiny.limits import LIMITS

from .audit_configs import TABULAR
from .test_cli import make_table, write_table

SCRIPT = shutil.which("scrutiny") or str(Path(sys.executable).parent / "scrutiny")
SENTINEL = "sentinel.txt"
HEAVY = ("torch", "sklearn", "shap", "captum", "aif360", "pandas", "matplotlib", "streamlit")
SEED_HIGH = LIMITS["seed"][1]

# a user's model module, written into the folder the command runs in
FACTORIES = '''
import torch
from torch import nn


def ok():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 2))


def exits():
    raise SystemExit(0)


def raises():
    raise RuntimeError("factory exploded")
'''


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty folder with one sentinel file, made the current folder."""
    (tmp_path / SENTINEL).write_text("keep me")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def factory_dir(workdir) -> Path:
    """``workdir`` holding ``usermodels.py`` (the FACTORIES) and ``w.safetensors`` for ``ok()``."""
    import torch
    from safetensors.torch import save_file

    (workdir / "usermodels.py").write_text(FACTORIES)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(workdir / "w.safetensors"))
    return workdir


def assert_nothing_written(folder: Path, *also: str) -> None:
    left = sorted(p.name for p in folder.iterdir() if p.name != "__pycache__")
    assert left == sorted([SENTINEL, *also]), left
    assert (folder / SENTINEL).read_text() == "keep me"


def assert_one_error(code: int, out: str, err: str, *fragments: str, exit_code: int = 2) -> str:
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert code == exit_code, (code, err)
    return lines[0]


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_script(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed console script, with no PYTHONPATH and an 80-column terminal."""
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment.update({"COLUMNS": "80", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})})
    return subprocess.run([SCRIPT, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=environment)


def start_script(*args, cwd: Path) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    # SIGINT back to its default, so the script handles Ctrl-C even when pytest runs as a background
    # job (which starts with SIGINT ignored, inherited by its children)
    return subprocess.Popen([SCRIPT, *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode} first: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out")
        time.sleep(0.02)


# ---------------------------------------------------------------- seeds and counts out of bounds

MODEL = "nothing-here"  # parsing fails before a model or data set is looked at
BOUNDED = [
    (["train", "--data", "breast_cancer", "--out", "run", "--seed", "-1"], "--seed -1"),
    (["train", "--data", "breast_cancer", "--out", "run", "--seed", str(2**70)], f"--seed {2**70}"),
    (["train", "--data", "breast_cancer", "--out", "run", "--epochs", "1e23"], "--epochs 1e23"),
    (["train", "--data", "breast_cancer", "--out", "run", "--batch-size", str(2**40)], f"--batch-size {2**40}"),
    (["explain", MODEL, "--data", "breast_cancer", "--seed", "-1"], "--seed -1"),
    (["explain", MODEL, "--data", "breast_cancer", f"--seed={SEED_HIGH + 1}"], f"--seed {SEED_HIGH + 1}"),
    (["explain", MODEL, "--data", "breast_cancer", "--samples", str(10**12)], f"--samples {10**12}"),
    (["explain", MODEL, "--data", "breast_cancer", "--top", "0"], "--top 0"),
    (["attack", MODEL, "--data", "breast_cancer", "--seed", "-1"], "--seed -1"),
    (["attack", MODEL, "--data", "breast_cancer", "--seed", str(2**64)], f"--seed {2**64}"),
    (["attack", MODEL, "--data", "breast_cancer", "--steps", str(10**12)], f"--steps {10**12}"),
    (["attack", MODEL, "--data", "breast_cancer", "--queries", str(10**12)], f"--queries {10**12}"),
    (["attack", MODEL, "--data", "breast_cancer", "--restarts", "0"], "--restarts 0"),
    (["fairness", MODEL, "--data", "breast_cancer", "--seed", "-1"], "--seed -1"),
    (["fairness", MODEL, "--data", "breast_cancer", "--seed", str(2**70)], f"--seed {2**70}"),
    (["fairness", MODEL, "--data", "breast_cancer", "--boot", "-1"], "--boot -1"),
]


@pytest.mark.parametrize("args,fragment", BOUNDED, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BOUNDED])
def test_out_of_bounds_is_refused_by_name(capsys, workdir, args, fragment):
    option = fragment.split()[0]
    low, high = LIMITS[option[2:].replace("-", "_")]
    line = assert_one_error(*run_main(capsys, *args), fragment)
    assert f"from {low:,} to {high:,}" in line
    assert_nothing_written(workdir)


@pytest.mark.parametrize("args,fragment", [
    (["train", "--data", "breast_cancer", "--out", "run", "--seed", "1180591620717411303424"],
     "--seed 1180591620717411303424"),
    (["train", "--data", "breast_cancer", "--out", "run", "--epochs", "99999999999999999999999"],
     "--epochs 99999999999999999999999"),
    (["fairness", MODEL, "--data", "breast_cancer", "--boot", "1000000000"], "--boot 1000000000"),
], ids=["seed-2^70", "epochs-huge", "boot-1e9"])
def test_out_of_bounds_through_the_console_script(workdir, args, fragment):
    run = run_script(*args, cwd=workdir, timeout=120)
    assert_one_error(run.returncode, run.stdout, run.stderr, fragment)
    assert_nothing_written(workdir)


@pytest.mark.parametrize("seed", [-1, 2**70], ids=["negative", "2^70"])
def test_audit_config_seed_out_of_bounds(capsys, workdir, seed):
    (workdir / "cfg.toml").write_text(f"seed = {seed}\n")
    result = run_main(capsys, "audit", MODEL, "--data", "breast_cancer", "--out", "run", "--config", "cfg.toml")
    assert_one_error(*result, "cfg.toml", "seed", f"{seed:,}")
    assert_nothing_written(workdir, "cfg.toml")


def test_help_shows_the_bounds(capsys):
    code, out, _ = run_main(capsys, "attack", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for option, name in (("--seed", "seed"), ("--samples", "samples"), ("--steps", "steps"), ("--queries", "queries")):
        low, high = LIMITS[name]
        assert re.search(rf"{option} <int range> .*?{low}<=x<={high}", flat), option


# ---------------------------------------------------------------- values that used to get the wrong message


@pytest.mark.parametrize("value", ["1e308", "nan", "-1", "0.1,inf"])
def test_eps_names_the_value(capsys, workdir, value):
    result = run_main(capsys, "attack", MODEL, "--data", "breast_cancer", "--eps", value)
    assert_one_error(*result, f"--eps {value}: expected finite positive numbers")
    assert_nothing_written(workdir)


def test_mitigate_names_mitigate(capsys, workdir, data_dir):
    result = run_main(capsys, "fairness", MODEL, "--data", "german", "--mitigate", "nosuch", "--boot", "0")
    line = assert_one_error(*result, "--mitigate nosuch", "sex", "age")
    assert "--attributes" not in line
    assert_nothing_written(workdir)


# ---------------------------------------------------------------- model code that exits or raises


def test_factory_that_exits_0_does_not_pass_the_audit(factory_dir):
    (factory_dir / "cfg.toml").write_text(TABULAR)
    run = run_script("audit", "usermodels:exits", "--weights", "w.safetensors", "--data", "breast_cancer",
                     "--out", "run", "--config", "cfg.toml", cwd=factory_dir)
    assert_one_error(run.returncode, run.stdout, run.stderr, "usermodels:exits", "SystemExit(0)")
    assert_nothing_written(factory_dir, "usermodels.py", "w.safetensors", "cfg.toml")


def test_factory_that_raises(factory_dir):
    run = run_script("evaluate", "usermodels:raises", "--weights", "w.safetensors", "--data", "breast_cancer",
                     cwd=factory_dir)
    assert_one_error(run.returncode, run.stdout, run.stderr, "usermodels:raises", "RuntimeError", "factory exploded")
    assert_nothing_written(factory_dir, "usermodels.py", "w.safetensors")


def test_factory_module_imports_from_the_current_folder(factory_dir):
    """As with ``python -m``: no PYTHONPATH needed for a module beside the user."""
    import torch
    from sklearn.metrics import accuracy_score

    from scrutiny.models import load_dataset

    run = run_script("evaluate", "usermodels:ok", "--weights", "w.safetensors", "--data", "breast_cancer",
                     cwd=factory_dir)
    assert run.returncode == 0, run.stderr
    # the accuracy it prints is the module's own model on the encoded test split
    dataset = load_dataset("breast_cancer")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 2))
    with torch.no_grad():
        predicted = model(torch.as_tensor(dataset.encode(dataset.test.X))).argmax(1).numpy()
    expected = accuracy_score(dataset.test.y, predicted)
    assert re.search(rf"accuracy\W+{expected:.4f}", run.stdout), run.stdout


def test_current_folder_stays_off_the_path_after_main(capsys, workdir):
    before = list(sys.path)
    run_main(capsys, "--version")
    assert sys.path == before


class _Stop(BaseException):
    pass


@pytest.mark.parametrize("raised,code,fragments", [
    (SystemExit(0), 2, ["SystemExit(0)"]),
    (SystemExit(1), 2, ["SystemExit(1)"]),
    (SystemExit("bye"), 2, ["SystemExit('bye')"]),
    (_Stop("halt"), 2, ["_Stop", "halt"]),
    (MemoryError("Unable to allocate 59.6 GiB"), 2, ["out of memory", "59.6 GiB"]),
    (ZeroDivisionError("division by zero"), 3, ["internal error: ZeroDivisionError: division by zero", "SCRUTINY_DEBUG=1"]),
], ids=["exit-0", "exit-1", "exit-text", "base-exception", "memory", "bug"])
def test_whatever_a_command_raises_gives_one_line(capsys, workdir, monkeypatch, raised, code, fragments):
    def explode(*args, **kwargs):
        raise raised

    monkeypatch.setattr(cli_module, "load_data", explode)
    monkeypatch.delenv("SCRUTINY_DEBUG", raising=False)
    result = run_main(capsys, "train", "--data", "breast_cancer", "--out", "run")
    assert_one_error(*result, *fragments, exit_code=code)
    assert_nothing_written(workdir)


def test_debug_shows_the_traceback_of_a_bug(capsys, workdir, monkeypatch):
    def explode(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli_module, "load_data", explode)
    monkeypatch.setenv("SCRUTINY_DEBUG", "1")
    code, _, err = run_main(capsys, "train", "--data", "breast_cancer", "--out", "run")
    assert code == 3
    assert "Traceback" in err and "in explode" in err
    assert err.strip().splitlines()[-1].startswith("error: internal error: ZeroDivisionError")


# ---------------------------------------------------------------- signals


def test_ctrl_c_inside_a_command(capsys, workdir, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_module, "load_data", interrupt)
    code, out, err = run_main(capsys, "train", "--data", "breast_cancer", "--out", "run")
    assert (code, err.strip()) == (130, "interrupted: nothing was written")
    assert_nothing_written(workdir)


def test_sigterm_during_an_audit_leaves_nothing(factory_dir):
    (factory_dir / "cfg.toml").write_text(TABULAR)
    process = start_script("audit", "usermodels:ok", "--weights", "w.safetensors", "--data", "breast_cancer",
                           "--out", "run", "--config", "cfg.toml", "--device", "cpu", cwd=factory_dir)
    wait_for(lambda: any(factory_dir.glob(".run.*.partial")), process)  # the audit is writing its run
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in out + err
    assert (process.returncode, err.strip().splitlines()[-1]) == (130, "interrupted: nothing was written")
    assert_nothing_written(factory_dir, "usermodels.py", "w.safetensors", "cfg.toml")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc to see torch being loaded")
def test_ctrl_c_while_loading_torch(workdir):
    process = start_script("train", "--data", "breast_cancer", "--out", "run", cwd=workdir)
    maps = Path(f"/proc/{process.pid}/maps")
    wait_for(lambda: "libtorch" in maps.read_text(errors="replace"), process)  # start-up imports under way
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in out + err
    assert (process.returncode, err.strip()) == (130, "interrupted: nothing was written")
    assert_nothing_written(workdir)


# ---------------------------------------------------------------- the app's port


def test_port_in_use(workdir):
    (workdir / "runs").mkdir()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = run_script("app", "runs", "--port", port, "--address", "127.0.0.1", cwd=workdir, timeout=60)
    assert_one_error(run.returncode, run.stdout, run.stderr, f"port {port} on 127.0.0.1 is in use")
    assert "http://" not in run.stdout  # refused before the app is announced
    assert_nothing_written(workdir, "runs")


# ---------------------------------------------------------------- start-up surface


def test_version(workdir):
    for flag in ("--version", "-V"):
        run = run_script(flag, cwd=workdir, timeout=60)
        assert (run.returncode, run.stdout, run.stderr) == (0, f"scrutiny {metadata.version('scrutiny')}\n", "")


COMMANDS = [[], ["train"], ["evaluate"], ["explain"], ["attack"], ["fairness"], ["audit"], ["report"], ["app"],
            ["data"], ["data", "list"], ["data", "fetch"], ["data", "columns"]]


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "scrutiny" for c in COMMANDS])
def test_help_shows_flags_as_flags(capsys, command):
    code, out, err = run_main(capsys, *command, "--help")
    assert code == 0, err
    assert "<bool>" not in out
    assert re.search(r"^\s+--help\s+Show this message and exit\.$", out, re.MULTILINE), out
    if command == ["audit"]:
        assert re.search(r"^\s+--overwrite\s+Replace", out, re.MULTILINE), out
    if command == ["attack"]:
        assert re.search(r"^\s+--detector / --no-detector\s+Train", out, re.MULTILINE), out


@pytest.mark.parametrize("command", [[], ["data"]], ids=["scrutiny", "data"])
def test_bare_group_prints_its_help(capsys, command):
    code, out, err = run_main(capsys, *command)
    assert code == 2
    assert err.startswith(f"Usage: {' '.join(['scrutiny', *command])} [OPTIONS] COMMAND")
    assert re.search(r"^Commands:$", err, re.MULTILINE) and "error:" not in err


PROBE = """
import contextlib, io, sys
from scrutiny.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(code, *sorted(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("args,code", [
    (["--help"], 0),
    (["train", "--help"], 0),
    (["--version"], 0),
    (["train", "--data", "adult", "--out", "x", "--seed", "-1"], 2),
    (["train", "--data", "adult", "--out", "x", "--bogus"], 2),
    (["attack", MODEL, "--data", "adult", "--eps", "1e308"], 2),
], ids=["help", "train-help", "version", "seed", "unknown-option", "eps"])
def test_no_heavy_import_before_a_command_needs_it(workdir, args, code):
    run = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=workdir,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(code)], f"imported: {run.stdout}"
    assert_nothing_written(workdir)


def _column(table: str, index: int) -> list[str]:
    """The cells of column ``index`` of a rich table, one per row, with folded lines joined."""
    rows: list[list[str]] = []
    for line in table.splitlines():
        if not line.startswith("│"):
            continue
        parts = [part.strip() for part in line.strip("│").split("│")]
        if parts[0] or not rows:  # a row's first line has its first cell; folded lines do not
            rows.append([])
        rows[-1].append(parts[index])
    return ["".join(row) for row in rows]


def test_data_list_shows_whole_folders_at_80_columns(workdir):
    folder = workdir / ("a-rather-long-folder-name-" * 4) / "data"
    run = run_script("data", "list", "--data-dir", folder, cwd=workdir, timeout=60)
    assert run.returncode == 0, run.stderr
    assert max(len(line) for line in run.stdout.splitlines()) <= 80
    assert "…" not in run.stdout
    from scrutiny.models import RAW_FILES

    sources = _column(run.stdout, 1)
    assert [s for s in sources if s != "scikit-learn"] == [str(folder / name) for name in RAW_FILES]
    assert not folder.exists()


def test_names_are_printed_as_text_not_markup(capsys, workdir):
    folder = workdir / "[red]x[/red]" / "[/b]"  # rich markup, and a closing tag that matches nothing
    code, out, err = run_main(capsys, "data", "list", "--data-dir", folder)
    assert code == 0, err
    assert str(folder / "adult") in _column(out, 1)


# ---------------------------------------------------------------- data columns


def test_data_columns_of_a_user_table(capsys, workdir):
    from scrutiny.models import load_table

    data, spec = write_table(workdir / "in", make_table())
    code, out, err = run_main(capsys, "data", "columns", data, "--spec", spec)
    assert code == 0, err
    header, *lines = out.splitlines()
    rows = [line.split("\t") for line in lines]
    # the spec keeps score, region (3 values), sex (2 values) and age, in that order
    assert [name for _, name, _ in rows] == ["score", "region=east", "region=north", "region=south", "sex=male", "age"]
    assert [int(i) for i, _, _ in rows] == list(range(6))
    assert "6 encoded columns" in header
    # the printed encodings reproduce the fitted preprocessing on the test split
    dataset = load_table(data, spec)
    encoded, raw = dataset.encode(dataset.test.X), dataset.test.X
    for column, (_, name, how) in enumerate(rows):
        if how.startswith("numeric"):
            mean, scale = map(float, re.search(r"- (\S+)\) / (\S+)$", how).groups())
            expected = (raw[name].to_numpy(float) - mean) / scale
            np.testing.assert_allclose(encoded[:, column], expected, rtol=1e-4, atol=1e-4)
        else:
            feature, value = name.split("=")
            assert re.match(rf"(one-hot|binary): 1 when {feature} is {value}\b", how)
            np.testing.assert_array_equal(encoded[:, column], (raw[feature].astype(str) == value).to_numpy(float))
    assert_nothing_written(workdir, "in")


def test_data_columns_of_built_in_sets(capsys, data_dir, load):
    code, out, err = run_main(capsys, "data", "columns", "german")
    assert code == 0, err
    names = [line.split("\t")[1] for line in out.splitlines()[1:]]
    assert names == load("german").preprocessor.encoded_feature_names
    assert len(names) == load("german").encode(load("german").test.X[:1]).shape[1]

    code, out, err = run_main(capsys, "data", "columns", "digits")
    assert code == 0, err
    image = load("digits").test.X.shape[1:]  # (channels, height, width) of the images a model is given
    assert out.count("\n") == 1 and f"C×H×W = {'×'.join(map(str, image))}," in out


def test_data_columns_of_a_missing_file(capsys, workdir):
    result = run_main(capsys, "data", "columns", "nothing.csv", "--spec", "nothing.toml")
    assert_one_error(*result, "nothing")
    assert_nothing_written(workdir)
