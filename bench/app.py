"""Page load of ``scrutiny app`` on a large run: time to the first complete render of each page.

The run is built with scrutiny's own commands, never written by hand:

1. a synthetic binary tabular data set (Parquet: 9 features, two protected attributes ``sex``
   and ``age``, a label that leans on both) and its TOML spec for the bring-your-own-data path,
   whose ``test_size`` holds out exactly ``--rows`` rows (default 1,000,000) after
   ``--train-rows`` training rows (default 50,000);
2. ``scrutiny train --arch mlp --epochs N`` on it, twice (seeds 0 and 1: the Compare page needs
   two runs);
3. ``scrutiny audit`` of each model with a config that explains ``--explained`` test rows
   (default 10,000) with integrated gradients and saliency, attacks a small sample
   (``--attacked``, FGSM and Gaussian noise: cheap; the app shows what the run holds), and
   runs performance and fairness on the whole test split: each run holds ``--rows`` predictions.

The work folder (``--work DIR``) keeps the data, the models and the runs; a later call with the
same folder, the same sizes (recorded in ``DIR/build.json``) and the same audit config
(``DIR/audit.toml``) reuses them, so only the page loads are measured again. Build times are printed (the audit exits 1 when a
policy check fails: a finding of the audit, not an error of the benchmark).

Then ``python -m scrutiny.cli app DIR/runs --port N`` is started in its own process group and
each page is loaded from its URL, ``?page=P&run=large-a``, in headless Chromium (selenium and
chromedriver), ``--repeats`` times in a row (default 3): the first load is cold (the server has
not shown that page since it started; Streamlit's caches are empty for it), the others warm.
A load is timed from ``driver.get`` to the first moment when the page is completely rendered:
Streamlit's script has run to its end (``data-test-script-state="notRunning"``, no running
status widget), no ``stSpinner`` is shown, the page's header is there and every image in the
main area has loaded. A ``stException`` box fails the page at once; so does a page that is not
rendered within ``--timeout`` seconds, or a traceback in the server's log. Chromium's
performance log gives the bytes each load received over Streamlit's websocket (the script's
output: text, tables, chart specs) and over HTTP (st.image's media files, and Streamlit's
static files where the browser's cache does not hold them yet: the first load only).
A screenshot of each page (its full height, after the cold load) goes to ``DIR/screenshots/``.

Exit code 0 when every page rendered without an exception, 1 otherwise (each failure is named).
The default sizes build for about 12 minutes on 2 busy CPU cores (two trainings, two audits).

Usage::

    python bench/app.py [--rows N] [--explained N] [--work DIR] [--device cpu|cuda] [--timeout S]
                        [--repeats N] [--epochs N] [--train-rows N] [--attacked N]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd

from _common import cpu_name, versions

LIBRARIES = ("streamlit", "selenium", "torch", "pandas", "altair")
RUNS = ("large-a", "large-b")          # the two runs; pages are loaded for the first
# page (its ?page= value) and the header it shows
PAGES = (("runs", "Runs"), ("explanations", "Explanations"), ("robustness", "Robustness"),
         ("fairness", "Fairness"), ("compare", "Compare two runs"))
SPEC = """\
label = "approved"
favourable = "yes"
categorical = ["region", "education"]
test_size = {test_size!r}
seed = 0

[protected]
sex = ["male"]
age = {{ min = 25 }}
"""
CONFIG = """\
seed = 0
families = ["performance", "attributions", "robustness", "fairness"]

[attributions]
methods = ["integrated_gradients", "saliency"]
samples = {explained}

[robustness]
attacks = ["fgsm", "gaussian"]
samples = {attacked}
detector = false

[fairness]
attributes = ["sex", "age"]
"""


# ------------------------------------------------------------------ building the run


def cli(*arguments: str) -> list[str]:
    """The ``scrutiny`` command line, run by this interpreter."""
    return [sys.executable, "-m", "scrutiny.cli", *arguments]


def run_step(what: str, command: list[str], log: Path, ok=(0,)) -> float:
    """Run ``command`` (output to ``log``); its wall seconds. Any exit code outside ``ok`` ends the benchmark."""
    print(f"  {what}: {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    with open(log, "wb") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code not in ok:
        tail = log.read_text(errors="replace")[-3000:]
        sys.exit(f"{what} failed (exit code {code}; log {log}):\n{tail}")
    print(f"    {seconds:.1f} s (exit code {code})", flush=True)
    return seconds


def test_share(rows: int, total: int) -> float:
    """The ``test_size`` for which the stratified split (``ceil(test_size * total)`` test rows) holds out ``rows``."""
    share = rows / total
    while math.ceil(share * total) > rows:
        share = math.nextafter(share, 0.0)
    while math.ceil(share * total) < rows:
        share = math.nextafter(share, 1.0)
    return share


def synthetic_table(n: int, seed: int) -> pd.DataFrame:
    """``n`` loan applications: numbers, two categoricals, ``sex`` and ``age`` (protected) and an
    ``approved`` label drawn from a logistic model that favours men and applicants of 25 or more."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["female", "male"]), size=n, p=[0.45, 0.55])
    age = rng.integers(18, 80, size=n)
    income = rng.lognormal(10.5, 0.6, size=n).round(0)
    hours = rng.normal(40, 8, size=n).clip(5, 90).round(1)
    debt_ratio = rng.uniform(0, 1, size=n).round(3)
    credit_years = rng.integers(0, 40, size=n)
    score = rng.normal(0, 1, size=n).round(3)
    region = rng.choice(np.array(["north", "south", "east", "west", "centre"]), size=n)
    education = rng.choice(np.array(["primary", "secondary", "bachelor", "master"]), size=n, p=[0.15, 0.45, 0.3, 0.1])
    logit = (0.9 * (np.log(income) - 10.5) / 0.6 + 0.02 * (hours - 40) - 1.5 * (debt_ratio - 0.5)
             + 0.03 * (credit_years - 20) + 0.8 * score + 0.4 * (sex == "male") + 0.3 * (age >= 25)
             + 0.2 * (education == "master") - 0.2 * (region == "south") - 0.3)
    approved = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"income": income, "hours": hours, "debt_ratio": debt_ratio, "credit_years": credit_years,
                         "score": score, "region": region, "education": education, "sex": sex, "age": age,
                         "approved": np.where(approved, "yes", "no")})


def build(args, work: Path) -> dict[str, float]:
    """The data, the models and the runs in ``work`` (kept from an earlier call with the same sizes);
    seconds of each step that ran."""
    sizes = {"rows": args.rows, "train_rows": args.train_rows, "explained": args.explained,
             "attacked": args.attacked, "epochs": args.epochs}
    record = work / "build.json"
    runs = work / "runs"
    config_text = CONFIG.format(explained=args.explained, attacked=args.attacked)
    config = work / "audit.toml"
    if record.exists() and all((runs / name / "findings.json").exists() for name in RUNS):
        built = json.loads(record.read_text())
        if built.get("sizes") == sizes and config.exists() and config.read_text() == config_text:
            print(f"build: kept from an earlier call in {work} (built in {built['total']:.0f} s: "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in built["seconds"].items()) + ")")
            return {}
        print(f"build: {record} records other sizes ({built.get('sizes')}) or {config} another config: building again")
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs.mkdir(exist_ok=True)
    seconds: dict[str, float] = {}
    total = args.train_rows + args.rows
    print(f"build: {total:,} synthetic rows ({args.train_rows:,} training, {args.rows:,} test), "
          f"{args.explained:,} explained, {args.attacked:,} attacked, device {args.device}", flush=True)
    start = time.perf_counter()
    data, spec = work / "loans.parquet", work / "loans.toml"
    synthetic_table(total, seed=0).to_parquet(data, index=False)
    spec.write_text(SPEC.format(test_size=test_share(args.rows, total)))
    config.write_text(config_text)
    seconds["data"] = time.perf_counter() - start
    print(f"  data: {data.name} ({data.stat().st_size / 2**20:.1f} MiB) in {seconds['data']:.1f} s", flush=True)
    for seed, name in enumerate(RUNS):
        model = work / f"model-{name}"
        seconds[f"train {name}"] = run_step(
            f"train {name}", cli("train", "--data", str(data), "--spec", str(spec), "--out", str(model), "--arch", "mlp",
                                 "--epochs", str(args.epochs), "--seed", str(seed), "--device", args.device,
                                 "--overwrite"), logs / f"train-{name}.log")
        seconds[f"audit {name}"] = run_step(
            f"audit {name}", cli("audit", str(model), "--data", str(data), "--spec", str(spec), "--config", str(config),
                                 "--out", str(runs / name), "--device", args.device, "--overwrite"),
            logs / f"audit-{name}.log", ok=(0, 1))
    total_seconds = sum(seconds.values())
    record.write_text(json.dumps({"sizes": sizes, "seconds": seconds, "total": total_seconds}, indent=1))
    print(f"build: {total_seconds:.1f} s in all", flush=True)
    return seconds


def run_size(folder: Path) -> str:
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    return f"{size / 2**20:.1f} MiB"


# ------------------------------------------------------------------ the app and the browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_app(runs: Path, log: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """``scrutiny app RUNS --port N`` in its own process group; it and its URL once /_stcore/health says ok."""
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(cli("app", str(runs), "--port", str(port)), stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True,
                                   env={**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            sys.exit(f"the app server exited ({process.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.read().decode().strip() == "ok":
                    return process, url
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_app(process)
            sys.exit(f"no answer from {url}/_stcore/health in {timeout:.0f} s:\n{log.read_text(errors='replace')}")
        time.sleep(0.25)


def stop_app(process: subprocess.Popen) -> None:
    """End the process group this benchmark started (the CLI runs `streamlit run` as a child)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def start_browser(timeout: float):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        sys.exit("bench/app.py needs `chromium` and `chromedriver` on PATH "
                 "(Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(timeout)
    return driver


STATE = """
const main = document.querySelector('[data-testid="stMain"]');
const exceptions = [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText);
if (exceptions.length) return {exception: exceptions.join('\\n---\\n')};
const app = document.querySelector('[data-testid="stApp"]');
if (!app || !main) return {done: false, why: 'no app yet'};
if (app.getAttribute('data-test-script-state') !== 'notRunning') return {done: false, why: 'script running'};
if (document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]'))
    return {done: false, why: 'status: running'};
if (document.querySelector('[data-testid="stSpinner"]')) return {done: false, why: 'spinner'};
const header = arguments[0];
const headings = [...main.querySelectorAll('[data-testid="stHeading"]')].map(h => h.innerText.trim());
if (!headings.some(h => h === header || h.startsWith(header))) return {done: false, why: 'no header'};
if (![...main.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0))
    return {done: false, why: 'images loading'};
return {done: true};
"""


def received_bytes(driver) -> tuple[int, int]:
    """Bytes received since the last call (Chromium's performance log): over websockets (Streamlit's
    messages: the script's output, tables and charts), and over HTTP (media such as st.image's
    files, and the app's static files unless the browser's cache holds them)."""
    socket_bytes = http_bytes = 0
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        method, params = message.get("method"), message.get("params", {})
        if method == "Network.webSocketFrameReceived":
            frame = params["response"]
            payload = frame.get("payloadData", "")
            socket_bytes += len(base64.b64decode(payload)) if frame.get("opcode") == 2 else len(payload.encode())
        elif method == "Network.loadingFinished":
            http_bytes += int(params.get("encodedDataLength", 0))
    return socket_bytes, http_bytes


def load(driver, url: str, header: str, timeout: float) -> tuple[float, str | None]:
    """Seconds from ``driver.get(url)`` to the complete render; and the failure, if any."""
    driver.get("about:blank")
    received_bytes(driver)  # drop the log of earlier loads
    start = time.perf_counter()
    try:
        driver.get(url)
    except Exception as error:  # noqa: BLE001 - a page load timeout is reported like any other
        return time.perf_counter() - start, f"load failed: {type(error).__name__}: {str(error).splitlines()[0]}"
    deadline = start + timeout
    state: dict = {}
    while time.perf_counter() < deadline:
        state = driver.execute_script(STATE, header)
        if state.get("exception"):
            return time.perf_counter() - start, f"Streamlit exception on the page:\n{state['exception'][:3000]}"
        if state.get("done"):
            seconds = time.perf_counter() - start
            time.sleep(0.5)  # charts (vega) and data grids draw after the script run ends; a rerun shows here
            after = driver.execute_script(STATE, header)
            if after.get("exception"):
                return seconds, f"Streamlit exception on the page:\n{after['exception'][:3000]}"
            if not after.get("done"):
                continue  # it ran again: wait for that run to end too
            return seconds, None
        time.sleep(0.05)
    text = driver.execute_script("return document.body.innerText.slice(0, 1500)")
    return time.perf_counter() - start, f"not rendered in {timeout:.0f} s ({state.get('why')}); page:\n{text}"


def screenshot(driver, path: Path) -> None:
    """The page at its full height (the main area scrolls inside the window), then the window size back."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 1000")
    driver.set_window_size(1400, min(max(1000, int(height) + 120), 8000))
    time.sleep(0.5)
    driver.save_screenshot(str(path))
    driver.set_window_size(1400, 1000)


# ------------------------------------------------------------------ main


def table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(header))
    print("-" * len(line(header)))
    for r in rows:
        print(line(r))


def measure(args, runs: Path, work: Path) -> int:
    shots = work / "screenshots"
    shots.mkdir(exist_ok=True)
    log = work / "logs" / "app-server.log"
    log.parent.mkdir(exist_ok=True)
    start = time.perf_counter()
    process, url = start_app(runs, log, args.timeout)
    print(f"\napp: scrutiny app {runs} answered in {time.perf_counter() - start:.1f} s at {url}", flush=True)
    driver = start_browser(args.timeout)
    failures: list[str] = []
    rows = []
    try:
        for page, header in PAGES:
            target = f"{url}/?page={page}&run={quote(RUNS[0], safe='')}"
            times, sizes, failed = [], [], None
            for repeat in range(args.repeats):
                seconds, failed = load(driver, target, header, args.timeout)
                times.append(seconds)
                sizes.append(received_bytes(driver))
                print(f"  {page} {'cold' if repeat == 0 else f'warm {repeat}'}: {seconds:.2f} s, received "
                      f"{sizes[-1][0] / 1024:,.0f} KiB over the websocket, {sizes[-1][1] / 1024:,.0f} KiB over HTTP"
                      + (" FAILED" if failed else ""), flush=True)
                if repeat == 0:
                    screenshot(driver, shots / f"{PAGES.index((page, header)):02d}-{page}.png")
                if failed:
                    failures.append(f"?page={page}&run={RUNS[0]}: {failed}")
                    break
            warm = times[1:]
            rows.append([page, f"{times[0]:.2f}" if not (failed and len(times) == 1) else "FAILED",
                         f"{statistics.median(warm):.2f}" if warm and not failed else ("FAILED" if failed else "-"),
                         f"{max(warm):.2f}" if warm and not failed else "-",
                         f"{sizes[0][0] / 1024:,.0f}", f"{sizes[0][1] / 1024:,.0f}",
                         f"{sizes[-1][0] / 1024:,.0f}" if warm else "-", f"{sizes[-1][1] / 1024:,.0f}" if warm else "-"])
    finally:
        driver.quit()
        stop_app(process)
    server_log = log.read_text(errors="replace")
    if "Traceback" in server_log:
        failures.append(f"the app server logged a traceback ({log}):\n{server_log[-3000:]}")
    print(f"\npage loads of run {RUNS[0]} ({args.rows:,} predictions, {args.explained:,} explained rows; "
          f"{run_size(runs / RUNS[0])} on disk), {args.repeats} loads per page in a row:")
    table(rows, ["page", "cold s", "warm median s", "warm max s", "cold ws KiB", "cold http KiB", "warm ws KiB",
                 "warm http KiB"])
    print("notes: seconds from driver.get to the complete render (script finished, no spinner, header shown, images "
          "loaded); ws/http KiB = bytes received during the load over Streamlit's websocket (the page's "
          "content) and over HTTP (media files, static files the browser had not cached; warm = the last load). "
          f"Screenshots: {shots}" + (" (removed with the temporary work folder: --work DIR keeps them)"
                                     if args.work is None else ""))
    for failure in failures:
        print(f"\nFAILED {failure}")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="test rows: predictions the run holds "
                        "(default: 1,000,000)")
    parser.add_argument("--explained", type=int, default=10_000, help="test rows explained (default: 10,000)")
    parser.add_argument("--train-rows", type=int, default=50_000, help="training rows (default: 50,000)")
    parser.add_argument("--attacked", type=int, default=200, help="test rows attacked (default: 200)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of each MLP (default: 3)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="device of training and audit (default: cuda when present)")
    parser.add_argument("--work", help="folder for the data, models, runs, logs and screenshots, reused when it "
                        "holds a run of the same sizes (default: a new temporary folder, removed at the end)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a page may take to render (default: 120)")
    parser.add_argument("--repeats", type=int, default=3, help="loads of each page in a row (default: 3)")
    args = parser.parse_args()
    for name in ("rows", "explained", "train_rows", "attacked", "epochs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.explained > args.rows or args.attacked > args.rows:
        parser.error(f"--explained ({args.explained:,}) and --attacked ({args.attacked:,}) must not exceed "
                     f"--rows ({args.rows:,})")
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{versions(LIBRARIES)}; CPU {cpu_name()} ({os.cpu_count()} cores); Python {sys.version.split()[0]}")
    if args.work is not None and Path(args.work).exists() and not Path(args.work).is_dir():
        parser.error(f"--work {args.work}: not a folder (give a folder to keep the built runs in, or leave it out)")
    temporary = args.work is None
    work = Path(args.work or tempfile.mkdtemp(prefix="scrutiny-bench-app-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        build(args, work)
        code = measure(args, work / "runs", work)
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
