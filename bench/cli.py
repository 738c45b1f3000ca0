"""Start-up time of the ``scrutiny`` command: ``--help`` and a bad-input error.

Each case runs the installed console script as a fresh subprocess, ``--runs`` times, and
prints the best and median wall time; a second subprocess per case runs the same arguments
through ``scrutiny.cli.main`` and lists which heavy libraries it imported (none should
be: the commands import them only once the input has been checked). The aim is under 1 s.

Usage::

    python bench/cli.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import cpu_name, versions

HEAVY = ("torch", "sklearn", "shap", "captum", "aif360", "pandas", "matplotlib", "streamlit", "scipy", "numpy")

# what a subprocess prints: the exit code of main(argv) and the heavy modules it imported
PROBE = """
import contextlib, io, json, sys
from scrutiny.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps([code, [m for m in {heavy!r} if m in sys.modules]]))
"""


def wall_times(command: list[str], runs: int, cwd: Path) -> tuple[list[float], int]:
    seconds, code = [], None
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=cwd, capture_output=True)
        seconds.append(time.perf_counter() - start)
        code = done.returncode
    return seconds, code


def heavy_imports(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=cwd,
                          capture_output=True, text=True, check=True)
    code, modules = json.loads(done.stdout.strip().splitlines()[-1])
    return code, modules


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="subprocesses per case (default: 10)")
    args = parser.parse_args()
    script = shutil.which("scrutiny") or str(Path(sys.executable).parent / "scrutiny")
    cases = {
        "scrutiny --help": ["--help"],
        "scrutiny train --data adult --out x --seed -1": ["train", "--data", "adult", "--out", "x", "--seed", "-1"],
    }
    print(f"Python {sys.version.split()[0]}, {versions(['typer', 'rich', 'torch'])}; {cpu_name()}; {args.runs} runs each")
    header = f"{'command':<48} {'exit':>4} {'best s':>7} {'median s':>8}  heavy modules imported"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as folder:  # the bad-input case must write nothing: run it in an empty folder
        cwd = Path(folder)
        for label, argv in cases.items():
            seconds, code = wall_times([script, *argv], args.runs, cwd)
            probe_code, modules = heavy_imports(argv, cwd)
            assert probe_code == code, f"{label}: exit {code} from the script, {probe_code} from main()"
            assert not any(cwd.iterdir()), f"{label} wrote {sorted(p.name for p in cwd.iterdir())}"
            print(f"{label:<48} {code:>4} {min(seconds):>7.3f} {statistics.median(seconds):>8.3f}  "
                  f"{', '.join(modules) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
