"""Hostile destinations and faults for everything a scrutiny command writes (issue 13: no data
loss, no race, no litter).

A refusal is: exit code 2, one ``error:`` line naming the culprit, no traceback, and nothing
written or deleted: the would-be victim's files and every entry of its parent folder are
unchanged. Refusals of a bad destination come before any work (the model and the data are
never loaded). A representative subset runs through the installed ``scrutiny`` script, the
rest through ``main()``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scrutiny import safe_write
from scrutiny.audit.run.run_folder import RUN, RunError, RunWriter, load_run
from scrutiny.cli import main

PERFORMANCE_ONLY = 'families = ["performance"]\n'
NON_UTF8 = os.fsdecode(b"run_\xff")  # a name with a byte that is not UTF-8 (a lone surrogate in Python)


# ---------------------------------------------------------------- helpers


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, a link's target, or "dir"."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        entries[key] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
    return entries


def refused(code: int, stdout: str, stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stdout + stderr
    # training's progress bar (redrawn with \r) is not a message
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert code == 2, (code, lines[0])
    return lines[0]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    stdout, stderr = capsys.readouterr()
    return code, stdout, stderr


def script(*args) -> tuple[int, str, str]:
    """The installed console script, with arguments passed as bytes (so non-UTF-8 names survive)."""
    command = shutil.which("scrutiny") or str(Path(sys.executable).parent / "scrutiny")
    done = subprocess.run([command, *(os.fsencode(str(a)) for a in args)], capture_output=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    return done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace")


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def precious(folder: Path) -> Path:
    """A folder with a user's file in it: the would-be victim."""
    folder.mkdir(parents=True)
    (folder / "thesis.txt").write_text("four years of work\n")
    return folder


def stale_name(name: str, pid: int, what: str = "partial", host: str | None = None) -> str:
    return f".{name}.{host or safe_write._HOST}.{pid}.0123abcd.{what}"


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def where_the_runs_are(out: Path) -> str:
    """The destination's run ("old"/"new"), or "old, aside" while the fallback keeps it in a .old folder."""
    if os.path.lexists(out):
        return run_marker(out)
    aside = [p for p in out.parent.iterdir() if p.name.endswith(".old")]
    assert len(aside) == 1 and run_marker(aside[0]) == "old", f"no run at {out} and none aside"
    return "old, aside"


def run_marker(folder: Path) -> str:
    """Which run is at ``folder``: the whole run must load (hashes checked)."""
    return load_run(folder).manifest.get("marker", "old")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def checkpoint(trained) -> Path:
    return trained("breast_cancer", "mlp")[2]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "performance.toml"
    path.write_text(PERFORMANCE_ONLY)
    return path


@pytest.fixture(scope="module")
def run(checkpoint, config, tmp_path_factory) -> Path:
    """A real, small run folder (performance only) to copy."""
    out = tmp_path_factory.mktemp("runs") / "run"
    code = main(["audit", str(checkpoint), "--data", "breast_cancer", "--out", str(out), "--config", str(config)])
    assert code in (0, 1)
    return out


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command loads data, a model or a run, trains or renders."""
    import scrutiny.cli
    import scrutiny.models
    import scrutiny.reports.render

    def forbidden(*args, **kwargs):
        pytest.fail("work started before the destination was refused")

    monkeypatch.setattr(scrutiny.cli, "load_data", forbidden)
    monkeypatch.setattr(scrutiny.models, "load_model", forbidden)
    monkeypatch.setattr(scrutiny.models, "train_on", forbidden)
    monkeypatch.setattr(scrutiny.reports.render, "write_reports", forbidden)


def audit_args(checkpoint: Path, out, config: Path, *extra) -> list:
    return ["audit", checkpoint, "--data", "breast_cancer", "--out", out, "--config", config, *extra]


# ---------------------------------------------------------------- --overwrite replaces only its own kind


def test_audit_into_the_checkpoint_it_audits_is_refused(checkpoint, config, tmp_path):
    model = Path(shutil.copytree(checkpoint, tmp_path / "model"))
    before = tree(tmp_path)
    code, stdout, stderr = script(*audit_args(model, model, config, "--overwrite"))
    refused(code, stdout, stderr, f"--out {model}", "is the input")
    assert tree(tmp_path) == before  # the weights are still there


def test_audit_overwrite_refuses_a_folder_that_is_not_a_run(checkpoint, config, tmp_path, capsys, no_work):
    victim = precious(tmp_path / "precious")
    before = tree(tmp_path)
    refused(*cli(capsys, *audit_args(checkpoint, victim, config, "--overwrite")), f"--out {victim}",
            "is not a scrutiny run folder")
    assert tree(tmp_path) == before


def test_train_overwrite_refuses_a_folder_that_is_not_a_checkpoint(tmp_path):
    victim = precious(tmp_path / "precious")
    before = tree(tmp_path)
    code, stdout, stderr = script("train", "--data", "breast_cancer", "--out", victim, "--overwrite")
    refused(code, stdout, stderr, f"--out {victim}", "is not a scrutiny checkpoint")
    assert tree(tmp_path) == before


def test_train_overwrite_refuses_a_run_folder(run, tmp_path, capsys, no_work):
    other = Path(shutil.copytree(run, tmp_path / "run"))
    before = tree(tmp_path)
    refused(*cli(capsys, "train", "--data", "breast_cancer", "--out", other, "--overwrite"), "is not a scrutiny checkpoint")
    assert tree(tmp_path) == before


def test_audit_overwrite_refuses_another_checkpoint(checkpoint, config, tmp_path, capsys, no_work):
    other = Path(shutil.copytree(checkpoint, tmp_path / "other-model"))
    before = tree(tmp_path)
    refused(*cli(capsys, *audit_args(checkpoint, other, config, "--overwrite")), "is not a scrutiny run folder")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- folders that are never a destination


@pytest.mark.parametrize("command", ["audit", "train"])
def test_out_root_is_refused(command, checkpoint, config, capsys, no_work):
    before = sorted(os.listdir("/"))
    args = audit_args(checkpoint, "/", config) if command == "audit" else ["train", "--data", "breast_cancer", "--out", "/"]
    refused(*cli(capsys, *args, "--overwrite"), "--out /", "is the root folder")
    assert sorted(os.listdir("/")) == before  # no /..XXXX.old left


@pytest.mark.parametrize("out,relation", [(".", "is the current folder"), ("..", "contains the current folder")])
def test_out_current_folder_is_refused(out, relation, checkpoint, config, tmp_path, monkeypatch, capsys, no_work):
    victim = precious(tmp_path / "work")
    (victim / "sub").mkdir()
    monkeypatch.chdir(victim if out == "." else victim / "sub")
    before = tree(tmp_path)
    refused(*cli(capsys, *audit_args(checkpoint, out, config, "--overwrite")), f"--out {out}", relation)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("which", ["home", "above home"])
def test_out_home_folder_is_refused(which, checkpoint, config, tmp_path, monkeypatch, capsys, no_work):
    home = precious(tmp_path / "users" / "me")
    monkeypatch.setenv("HOME", str(home))
    out = home if which == "home" else home.parent
    before = tree(tmp_path)
    line = refused(*cli(capsys, *audit_args(checkpoint, out, config, "--overwrite")), f"--out {out}")
    assert ("is the home folder" if which == "home" else "contains the home folder") in line
    assert tree(tmp_path) == before


def test_out_containing_the_model_is_refused(checkpoint, config, tmp_path, capsys, no_work):
    models = tmp_path / "models"
    model = Path(shutil.copytree(checkpoint, models / "bc"))
    before = tree(tmp_path)
    refused(*cli(capsys, *audit_args(model, models, config, "--overwrite")), f"--out {models}",
            f"contains the input {model}")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["audit", "train"])
@pytest.mark.parametrize("target", ["the file", "its folder"])
def test_out_is_or_contains_the_data_file(command, target, checkpoint, config, tmp_path, capsys, no_work):
    data = tmp_path / "tables" / "loans.csv"
    data.parent.mkdir()
    data.write_text("score,approved\n1,yes\n0,no\n")
    spec = tmp_path / "spec.toml"
    spec.write_text('label = "approved"\n')
    out = data if target == "the file" else data.parent
    given = ["--data", data, "--spec", spec, "--out", out, "--overwrite"]
    args = ["audit", checkpoint, *given, "--config", config] if command == "audit" else ["train", *given]
    before = tree(tmp_path)
    relation = "is the input" if target == "the file" else "contains the input"
    refused(*cli(capsys, *args), f"--out {out}", f"{relation} {data}")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command,overwrite", [("audit", False), ("audit", True), ("train", True), ("report", False)])
def test_out_is_a_file(command, overwrite, checkpoint, run, config, tmp_path, capsys, no_work):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    args = {"audit": audit_args(checkpoint, afile, config), "train": ["train", "--data", "breast_cancer", "--out", afile],
            "report": ["report", run, "--out", afile]}[command]
    before = tree(tmp_path)
    refused(*cli(capsys, *args, *(["--overwrite"] if overwrite else [])), f"--out {afile}", "is a file")
    assert tree(tmp_path) == before


def test_report_out_a_file_through_the_script(run, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    code, stdout, stderr = script("report", run, "--format", "html,md", "--out", afile)
    refused(code, stdout, stderr, f"--out {afile}", "is a file")
    assert afile.read_text() == "keep me\n" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_out_below_a_file(checkpoint, config, tmp_path, capsys, no_work):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    refused(*cli(capsys, *audit_args(checkpoint, afile / "run", config)), f"--out {afile / 'run'}",
            f"{afile} is a file")
    assert tree(tmp_path) == {"afile": b"keep me\n"}


def test_out_symbolic_link_is_refused(run, checkpoint, config, tmp_path, capsys, no_work):
    target = Path(shutil.copytree(run, tmp_path / "real-run"))
    link = tmp_path / "link"
    link.symlink_to(target)
    before = tree(tmp_path)
    refused(*cli(capsys, *audit_args(checkpoint, link, config, "--overwrite")), f"--out {link}", "symbolic link")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("command", ["audit", "train", "report"])
def test_non_utf8_out_is_refused_up_front(command, checkpoint, run, config, tmp_path, capsys, no_work):
    out = tmp_path / NON_UTF8
    args = {"audit": audit_args(checkpoint, out, config), "train": ["train", "--data", "breast_cancer", "--out", out],
            "report": ["report", run, "--out", out]}[command]
    refused(*cli(capsys, *args), "run_\\xff", "not valid UTF-8")
    assert os.listdir(tmp_path) == []


def test_non_utf8_out_through_the_script(checkpoint, config, tmp_path):
    out = tmp_path / NON_UTF8
    code, stdout, stderr = script(*audit_args(checkpoint, out, config))
    refused(code, stdout, stderr, "run_\\xff", "not valid UTF-8")
    assert os.listdir(tmp_path) == []


def test_a_data_file_whose_name_is_not_utf8_is_audited_and_named_in_the_run(tmp_path, monkeypatch):
    import numpy as np
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x1": rng.normal(size=200), "x2": rng.normal(size=200), "sex": rng.choice(["m", "f"], 200)})
    table["approved"] = np.where(table["x1"] + 0.5 * rng.normal(size=200) > 0, "yes", "no")
    data = os.fsdecode(b"loans_\xff.csv")  # bytes that are not UTF-8, as a file system may hold them
    table.to_csv(data, index=False)
    Path("spec.toml").write_text('label = "approved"\nfavourable = "yes"\n[protected]\nsex = ["m"]\n')
    Path("audit.toml").write_text('families = ["performance"]\n')
    code, _, stderr = script("train", "--data", data, "--spec", "spec.toml", "--out", "ck", "--epochs", "1")
    assert code == 0, stderr
    code, stdout, stderr = script("audit", "ck", "--data", data, "--spec", "spec.toml", "--out", "run",
                                  "--config", "audit.toml")
    assert code in (0, 1) and "run written to run" in stdout, stderr
    manifest = load_run("run").manifest
    assert data not in manifest["command"] and "loans_\\xff.csv" in manifest["command"]


def test_report_into_a_folder_that_is_not_a_report_folder(run, tmp_path, capsys, no_work):
    victim = precious(tmp_path / "docs")
    before = tree(tmp_path)
    refused(*cli(capsys, "report", run, "--format", "md", "--out", victim), f"--out {victim}", "is not a report folder")
    assert tree(tmp_path) == before


def test_report_out_is_the_run_folder(run, capsys, no_work):
    before = tree(run)
    refused(*cli(capsys, "report", run, "--format", "md", "--out", run), f"--out {run}", f"is the input {run}")
    assert tree(run) == before


# ---------------------------------------------------------------- write-time faults


def test_read_only_file_system_is_refused_before_any_work(checkpoint, config, tmp_path, monkeypatch, capsys, no_work):
    real = os.statvfs

    def read_only(path):
        result = real(path)
        return os.statvfs_result((*result[:8], result.f_flag | os.ST_RDONLY, *result[9:]))

    monkeypatch.setattr(safe_write.os, "statvfs", read_only)
    out = tmp_path / "ro" / "run"
    refused(*cli(capsys, *audit_args(checkpoint, out, config)), f"{out}: cannot write (Read-only file system)")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.ENOSPC, errno.EACCES])
def test_audit_write_failure_is_one_line_and_leaves_nothing(code, checkpoint, config, tmp_path, monkeypatch, capsys):
    """The first write of a run (its staging folder) fails as on a read-only, full or forbidden file system."""
    real = os.mkdir

    def failing(path, *args, **kwargs):
        if Path(path).name.startswith(".run."):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(safe_write.os, "mkdir", failing)
    out = tmp_path / "new" / "run"
    refused(*cli(capsys, *audit_args(checkpoint, out, config)), f"{out}: cannot write ({os.strerror(code)})")
    assert os.listdir(tmp_path) == []  # not even the parent folder made for it


@pytest.mark.parametrize("overwrite", [False, True])
def test_disk_full_while_committing_a_run(overwrite, run, checkpoint, config, tmp_path, monkeypatch, capsys):
    """The manifest, written by the commit itself, hits a full disk: nothing new, the old run intact."""
    out = tmp_path / "run"
    if overwrite:
        shutil.copytree(run, out)
    before = tree(tmp_path)
    real = Path.write_text

    def full(self, text, *args, **kwargs):
        if self.name == "manifest.json":
            self.write_bytes(text.encode()[:10])  # part of it made it to the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    args = audit_args(checkpoint, out, config, *(["--overwrite"] if overwrite else []))
    refused(*cli(capsys, *args), f"{out}: cannot write (No space left on device)")
    assert tree(tmp_path) == before


def test_train_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys, data_dir):
    import safetensors
    import safetensors.torch

    def full(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 64)
        raise safetensors.SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                                          'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "ck"
    refused(*cli(capsys, "train", "--data", "breast_cancer", "--out", out, "--epochs", "1"),
            f"{out}: cannot write (No space left on device)")
    assert os.listdir(tmp_path) == []


def test_report_failing_into_a_new_folder_leaves_no_folder(run, tmp_path, monkeypatch, capsys):
    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "reports" / "new"
    refused(*cli(capsys, "report", run, "--format", "html,md", "--out", out), f"{out}: cannot write (No space left")
    assert os.listdir(tmp_path) == []


def test_report_failing_in_an_existing_folder_keeps_the_old_report(run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rep"
    assert main(["report", str(run), "--format", "md", "--out", str(out)]) == 0
    capsys.readouterr()
    before = tree(tmp_path)
    real = os.fdopen

    def full(handle, mode="r", *args, **kwargs):
        stream = real(handle, mode, *args, **kwargs)
        if "w" in mode:
            stream.close()
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return stream

    monkeypatch.setattr(safe_write.os, "fdopen", full)
    refused(*cli(capsys, "report", run, "--format", "md", "--out", out), f"{out / 'report.md'}: cannot write (Read-only")
    assert tree(tmp_path) == before


# ---------------------------------------------------------------- races


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "fallback"])
def test_a_run_written_meanwhile_is_not_replaced(renameat2, run, checkpoint, config, tmp_path, monkeypatch, capsys):
    from scrutiny.audit.run.run_folder import RunWriter

    if not renameat2:
        monkeypatch.setattr(safe_write, "_RENAMEAT2", None)
    out = tmp_path / "run"
    original = RunWriter.commit

    def rival_then_commit(writer, manifest):
        shutil.copytree(run, out)  # another audit to the same --out commits while this one writes
        return original(writer, manifest)

    monkeypatch.setattr(RunWriter, "commit", rival_then_commit)
    refused(*cli(capsys, *audit_args(checkpoint, out, config)), str(out), "another process")
    assert tree(out) == tree(run)
    assert os.listdir(tmp_path) == ["run"]


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "fallback"])
def test_overwrite_target_swapped_for_a_user_folder_meanwhile(renameat2, run, checkpoint, config, tmp_path,
                                                                monkeypatch, capsys):
    from scrutiny.audit.run.run_folder import RunWriter

    if not renameat2:
        monkeypatch.setattr(safe_write, "_RENAMEAT2", None)
    out = Path(shutil.copytree(run, tmp_path / "run"))
    original = RunWriter.commit

    def swap_then_commit(writer, manifest):
        shutil.rmtree(out)
        precious(out)  # the user put their own folder there while the run was written
        return original(writer, manifest)

    monkeypatch.setattr(RunWriter, "commit", swap_then_commit)
    refused(*cli(capsys, *audit_args(checkpoint, out, config, "--overwrite")), str(out), "no longer a scrutiny run folder")
    assert tree(out) == {"thesis.txt": b"four years of work\n"}
    assert os.listdir(tmp_path) == ["run"]


def _fill_with_a_new_run(staging: safe_write.Staging, run: Path) -> None:
    """Put a copy of ``run``, marked "new", in an entered staging folder."""
    shutil.rmtree(staging.path)
    shutil.copytree(run, staging.path)
    manifest = json.loads((staging.path / "manifest.json").read_text())
    (staging.path / "manifest.json").write_text(json.dumps({**manifest, "marker": "new"}))


@pytest.mark.parametrize("renameat2", [True, False], ids=["exchange", "fallback"])
def test_overwrite_keeps_the_old_or_the_new_run_at_every_step(renameat2, run, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, turned into it) before each step of a replacement: the destination
    always holds a whole run, the old or the new one, and no hidden folder is left."""
    if not renameat2:
        monkeypatch.setattr(safe_write, "_RENAMEAT2", None)
    steps = ("_renameat2", "rename", "rmtree")
    seen_states: set[str] = set()
    for crash_at in range(10):
        out = tmp_path / f"case{crash_at}" / "run"
        shutil.copytree(run, out)
        calls: list[str] = []
        active = [False]

        def hooked(name, real, calls=calls, active=active, crash_at=crash_at, out=out):
            def call(*args, **kwargs):
                if not active[0]:
                    return real(*args, **kwargs)
                calls.append(name)
                if len(calls) == crash_at + 1:
                    raise KeyboardInterrupt
                result = real(*args, **kwargs)
                seen_states.add(where_the_runs_are(out))
                return result
            return call

        with monkeypatch.context() as patch:
            for name in steps:
                owner = safe_write if name == "_renameat2" else (os if name == "rename" else shutil)
                patch.setattr(owner, name, hooked(name, getattr(owner, name)))
            staging = safe_write.Staging(out, kind=RUN, overwrite=True)
            try:
                with staging:
                    _fill_with_a_new_run(staging, run)
                    active[0] = True
                    staging.commit()
                finished = True
            except KeyboardInterrupt:
                finished = False
            finally:
                active[0] = False
        assert run_marker(out) in ({"new"} if finished else {"old", "new"})  # a whole run, hashes checked
        assert hidden(out.parent) == []
        if finished:
            break
    else:
        pytest.fail("the replacement never finished")
    assert crash_at >= 2  # each step was interrupted once before the run that finished
    # exchange: the destination never lacks a run; fallback: the old run waits aside, whole, until the new is in place
    assert seen_states <= ({"new", "old"} if renameat2 else {"new", "old", "old, aside"}) and "new" in seen_states


def test_overwrite_crash_between_the_fallback_renames_is_repaired_by_the_next_write(run, tmp_path):
    """Without renameat2 a replacement is two renames; a process killed between them leaves the
    old run under its hidden .old name, and the next write to the parent puts it back."""
    out = Path(shutil.copytree(run, tmp_path / "run"))
    before = tree(out)
    code = f"""
import os, shutil
from pathlib import Path
from scrutiny.audit.run.run_folder import RUN
from scrutiny import safe_write
safe_write._RENAMEAT2 = None
real = safe_write._rename_new
def killed_after_first(source, target):
    real(source, target)
    os._exit(9)  # SIGKILL-like: no clean-up runs
safe_write._rename_new = killed_after_first
staging = safe_write.Staging({str(out)!r}, kind=RUN, overwrite=True)
with staging:
    shutil.copy({str(out / 'manifest.json')!r}, staging.path / "manifest.json")
    staging.commit()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert done.returncode == 9, done.stderr.decode()
    assert not out.exists()
    left = hidden(tmp_path)
    assert len(left) == 2 and {name.rsplit(".", 1)[1] for name in left} == {"old", "partial"}
    safe_write.sweep(tmp_path)  # what the next write to this parent does first
    assert tree(out) == before and hidden(tmp_path) == []


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, also where pytest started with SIGINT ignored (a background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_commit_is_delivered_after_it(run, tmp_path, monkeypatch, python_sigint):
    out = tmp_path / "run"
    real = safe_write._rename_new

    def interrupted(source, target):
        os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the commit
        real(source, target)

    monkeypatch.setattr(safe_write, "_rename_new", interrupted)
    staging = safe_write.Staging(out, kind=RUN)
    with pytest.raises(KeyboardInterrupt):
        with staging:
            _fill_with_a_new_run(staging, run)
            staging.commit()
    assert run_marker(out) == "new" and hidden(tmp_path) == []  # the rename finished first


# ---------------------------------------------------------------- stale staging


def test_stale_staging_of_a_dead_process_is_removed_by_the_next_write(run, tmp_path, capsys):
    gone, live = dead_pid(), os.getppid()
    other_host = "000000" if safe_write._HOST != "000000" else "111111"
    entries = {
        stale_name("run", gone): "removed",                       # a killed audit's staging
        stale_name("report.md", gone): "removed",                 # a killed report's temporary file
        stale_name("old-run", gone, "old"): "removed",            # replaced, and old-run is in place
        stale_name("lost-run", gone, "old"): "restored",          # the destination is missing: put back
        stale_name("run", live): "kept",                          # a live process is writing it
        stale_name("run", gone, host=other_host): "kept",         # another machine's
        ".run.x1y2z3w4.partial": "kept",                          # not this naming scheme
        ".git": "kept",
    }
    for name in entries:
        if name.startswith(".report.md."):
            (tmp_path / name).write_text("half")
        else:
            (tmp_path / name).mkdir()
            (tmp_path / name / "file").write_text("x")
    (tmp_path / "old-run").mkdir()
    code, _, stderr = cli(capsys, "report", run, "--format", "md", "--out", tmp_path / "rep")
    assert code == 0, stderr
    kept = {name for name, fate in entries.items() if fate == "kept"}
    assert set(hidden(tmp_path)) == kept
    assert (tmp_path / "lost-run" / "file").read_text() == "x"
    assert (tmp_path / "rep" / "report.md").is_file()


# ---------------------------------------------------------------- readers


def test_symlink_out_of_a_run_is_refused_by_the_reader(run, tmp_path):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    outside = tmp_path / "outside.npz"
    shutil.copy(copy / "arrays" / "predictions.npz", outside)  # same bytes: the hash matches
    (copy / "arrays" / "predictions.npz").unlink()
    (copy / "arrays" / "predictions.npz").symlink_to(outside)
    loaded = load_run(copy)
    with pytest.raises(RunError, match="predictions.npz: leads out of the run folder"):
        loaded.arrays("arrays/predictions.npz")


def test_symlink_out_of_a_run_is_refused_by_report(run, tmp_path):
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    outside = tmp_path / "findings-elsewhere.json"
    shutil.move(copy / "findings.json", outside)
    (copy / "findings.json").symlink_to(outside)
    before = tree(tmp_path)
    code, stdout, stderr = script("report", copy, "--format", "html,md")
    refused(code, stdout, stderr, "findings.json", "leads out of the run folder")
    assert tree(tmp_path) == before  # no report folder either


# ---------------------------------------------------------------- one permission rule


def _modes(folder: Path) -> set[tuple[str, int]]:
    paths = [folder, *folder.rglob("*")]
    return {("dir" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in paths}


def test_checkpoint_run_and_report_follow_the_umask(trained, run, tmp_path, monkeypatch):
    from scrutiny.models import save_checkpoint
    from scrutiny.reports.render import write_reports

    dataset, result, _ = trained("breast_cancer", "mlp")
    previous = os.umask(0o022)
    try:
        checkpoint = save_checkpoint(tmp_path / "ck", model=result.model, dataset=dataset, metrics={}, training={},
                                     seed=0)
        with RunWriter(tmp_path / "run") as writer:
            writer.text("findings.json", "{}")
            writer.arrays("arrays/a.npz", x=[1.0])
            (writer.path("figures") / "f.png").write_bytes(b"png")
            writer.commit({})
        write_reports(run, formats=["md"], out=tmp_path / "reports" / "rep")
        for folder in (checkpoint, tmp_path / "run", tmp_path / "reports"):
            assert _modes(folder) == {("dir", 0o755), ("file", 0o644)}, (folder, _modes(folder))
        os.umask(0o077)
        private = save_checkpoint(tmp_path / "ck-private", model=result.model, dataset=dataset, metrics={},
                                  training={}, seed=0)
        assert _modes(private) == {("dir", 0o700), ("file", 0o600)}
    finally:
        os.umask(previous)


# ---------------------------------------------------------------- library words


def test_library_messages_name_the_path_not_cli_flags(tmp_path):
    existing = tmp_path / "run"
    existing.mkdir()
    (existing / "x").write_text("x")
    with pytest.raises(safe_write.DestinationError) as caught:
        RunWriter(existing)
    assert str(caught.value).startswith(f"{existing}: already exists") and "--" not in str(caught.value)
