"""`scrutiny app RUNS_DIR` end to end: the real Streamlit server started through the CLI on a
free localhost port, every page loaded from its URL in headless Chromium (selenium and
chromedriver), a screenshot of each, and no Streamlit exception box on any page.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs them) and
``selenium`` (the ``dev`` extra); skipped with the reason when one is missing. The runs are
those of ``tests/test_app.py`` (written once per session). Screenshots go to the test's
tmp_path and are copied to /tmp/app_screenshots/.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .test_app import build_runs

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = Path("/tmp/app_screenshots")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="headless Chromium test needs `chromium` and `chromedriver` on PATH "
                              "(Debian: apt-get install chromium chromium-driver; .ci/run installs them)"),
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
]

# (page, run, the page's header): each loaded from its URL ?page=…&run=…
PAGES = [
    ("runs", "adult", "Runs"),
    ("explanations", "adult", "Explanations"),
    ("explanations", "digits", "Explanations"),
    ("robustness", "adult", "Robustness"),
    ("robustness", "digits", "Robustness"),
    ("fairness", "adult", "Fairness"),
    ("fairness", "digits", "Fairness"),
    ("compare", "adult", "Compare two runs"),
    ("runs", "corrupt", "Runs"),             # the unreadable runs: a message, not an exception
    ("explanations", "corrupt", None),       # no header: the page is the error message
    ("explanations", "../outside", "Explanations"),  # out of RUNS_DIR: a warning, another run shown
]
RENDER_TIMEOUT = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory, request):
    """`scrutiny app RUNS --port N` in its own process group; the URL once /_stcore/health says ok."""
    runs = build_runs(trained, tmp_path_factory, request)
    outside = runs.parent / "outside"  # a complete run beside RUNS_DIR, which ?run=../outside must not open
    if not outside.exists():
        shutil.copytree(runs / "digits", outside)
    port = free_port()
    log = tmp_path_factory.mktemp("app-server") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "scrutiny.cli", "app", str(runs), "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"})
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"the app server exited ({process.returncode}):\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no answer from {url}/_stcore/health in 60 s:\n{log.read_text()}"
            time.sleep(0.25)
        yield url, runs, log
    finally:
        # the CLI runs `streamlit run` as a child: end the whole group this test started
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(RENDER_TIMEOUT)
    try:
        yield driver
    finally:
        driver.quit()


def rendered(driver, header: str | None) -> bool:
    """The script has run to its end, its header (if any) is shown, and every image has loaded."""
    return bool(driver.execute_script(
        """
        const app = document.querySelector('[data-testid="stApp"]');
        if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
        if (document.querySelector('[data-testid="stStatusWidget"] [data-testid="stStatusWidgetRunningIcon"]')) return false;
        const header = arguments[0];
        const headings = [...document.querySelectorAll('[data-testid="stMain"] [data-testid="stHeading"]')];
        if (header !== null && !headings.some(h => h.innerText.trim() === header)) return false;
        if (header === null && !document.querySelector('[data-testid="stMain"] [data-testid="stAlert"]')) return false;
        return [...document.querySelectorAll('[data-testid="stMain"] img')].every(i => i.complete && i.naturalWidth > 0);
        """, header))


def wait_rendered(driver, header: str | None, what: str) -> None:
    deadline = time.monotonic() + RENDER_TIMEOUT
    while not rendered(driver, header):
        if time.monotonic() > deadline:
            state = driver.execute_script(
                "const a = document.querySelector('[data-testid=\"stApp\"]');"
                "return [a && a.getAttribute('data-test-script-state'), document.body.innerText.slice(0, 2000)]")
            raise AssertionError(f"{what}: not rendered in {RENDER_TIMEOUT} s; script state {state[0]!r}; page:\n{state[1]}")
        time.sleep(0.2)
    time.sleep(0.5)  # charts (vega) and data grids draw after the script run ends
    assert rendered(driver, header), f"{what}: ran again after it had finished"


def screenshot(driver, name: str, folder: Path) -> Path:
    """The page at its full height (the main area scrolls inside the window), then the window size back."""
    height = driver.execute_script(
        "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 1000")
    driver.set_window_size(1400, min(max(1000, int(height) + 120), 6000))
    time.sleep(0.4)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    driver.set_window_size(1400, 1000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)
    return path


def alerts(driver, kind: str | None = None) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stAlert"]')
            if kind is None or kind in (e.get_attribute("innerHTML") or "")]


@pytest.mark.parametrize("page, run, header", PAGES, ids=[f"{p}-{r.replace('/', '_')}" for p, r, _ in PAGES])
def test_page_in_headless_chromium(server, browser, tmp_path, page, run, header):
    from urllib.parse import quote

    from selenium.webdriver.common.by import By

    url, runs, log = server
    browser.get(f"{url}/?page={page}&run={quote(run, safe='')}")
    what = f"?page={page}&run={run}"
    wait_rendered(browser, header, what)
    name = f"{PAGES.index((page, run, header)):02d}-{page}-{run.replace('/', '_').replace('.', '')}"
    shot = screenshot(browser, name, tmp_path)
    assert shot.stat().st_size > 10_000, f"{shot}: a blank screenshot?"
    exceptions = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exceptions, f"{what}: Streamlit exception on the page (screenshot {shot}):\n" + "\n".join(
        e.text for e in exceptions)
    body = browser.find_element(By.CSS_SELECTOR, '[data-testid="stMain"]').text
    errors = [e.split(":")[0] for e in alerts(browser, "stAlertContentError")]
    # the Runs page lists the unreadable runs, each with its reason; a page of an unreadable run is its reason
    expected = (["corrupt", "no-findings"] if page == "runs" else
                [str(runs / "corrupt" / "findings.json")] if run == "corrupt" else [])
    assert errors == expected, alerts(browser)
    if run == "corrupt":
        assert str(runs / "corrupt" / "findings.json") in body.replace("\n", " "), body[:2000]
    if run.startswith(".."):
        assert f"'{run}' is not a run folder" in body and "(test row)" in body, body[:2000]
        assert "&run=adult&" in browser.current_url + "&", browser.current_url
    if page == "fairness" and run == "digits":
        assert "no fairness results" in body
    def shown(testid: str) -> int:
        return len(browser.find_elements(By.CSS_SELECTOR, f'[data-testid="stMain"] [data-testid="{testid}"]'))

    if page == "explanations" and run in ("adult", "digits"):
        assert shown("stImage") >= 2, f"{what}: no attribution figure"  # this row's, the importance figure
    if page == "robustness":
        # the run's own figures (curve, minimal perturbations, certified bounds); then the example, an image
        # for digits only
        assert shown("stImage") == 3 + (run == "digits"), f"{what}: a figure or the example is missing"
        assert "What each attack added" in body and "Certified robustness" in body, f"{what}: a section is missing"
    if page in ("runs", "fairness", "compare") and run == "adult":
        assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] [data-testid="stDataFrame"]'), \
            f"{what}: no table"
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]


# drill-down views, each opened from a shared link: (query, the page's header)
VIEWS = [
    ("page=runs&run=adult&focus=fairness.disparate_impact%5Brace%5D", "Runs"),
    ("page=fairness&run=adult&focus=sex%20%C3%97%20race&threshold=0.3", "Fairness"),
    ("page=explanations&run=adult&topk=sex", "Explanations"),
    ("page=explanations&run=adult&sort=disagreement", "Explanations"),
    ("page=explanations&run=adult&topk=prohibited", "Explanations"),
    ("page=robustness&run=adult&eps=0.25", "Robustness"),
    ("page=robustness&run=digits&radius=0.25", "Robustness"),
    ("page=compare&run=adult&a=adult&b=adult-seed1", "Compare two runs"),
    ("page=compare&run=adult&a=adult&b=adult", "Compare two runs"),
]


def no_exception(driver, what: str, shot: Path) -> None:
    from selenium.webdriver.common.by import By

    exceptions = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not exceptions, f"{what}: Streamlit exception on the page (screenshot {shot}):\n" + "\n".join(
        e.text for e in exceptions)
    unreadable = ("corrupt: ", "no-findings: ")  # the Runs page names the unreadable runs, each with its reason
    errors = [e for e in alerts(driver, "stAlertContentError") if not e.startswith(unreadable)]
    assert not errors, f"{what}: {errors}"


@pytest.mark.parametrize("query, header", VIEWS, ids=[f"view{i}" for i in range(len(VIEWS))])
def test_drill_down_view_in_headless_chromium(server, browser, tmp_path, query, header):
    from selenium.webdriver.common.by import By

    url, _, log = server
    browser.get(f"{url}/?{query}")
    wait_rendered(browser, header, query)
    shot = screenshot(browser, f"view{VIEWS.index((query, header)):02d}-{query.split('&')[0][5:]}", tmp_path)
    no_exception(browser, query, shot)
    # the view's parameters survive the first run of the page: the link can be shared as it is
    for pair in query.split("&"):
        assert pair.split("=")[0] in browser.current_url, (pair, browser.current_url)
    # an audit tool has nothing to deploy: Streamlit's deploy button is hidden (client.toolbarMode)
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAppDeployButton"]')
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]


def test_a_finding_opens_its_evidence_in_headless_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, _, _ = server
    browser.get(f"{url}/?page=runs&run=adult&focus=fairness.disparate_impact%5Bsex%5D")
    wait_rendered(browser, "Runs", "runs with a finding")
    button = next(b for b in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stMain"] button')
                  if b.text.startswith("Open the evidence"))
    button.click()
    wait_rendered(browser, "Fairness", "the evidence of fairness.disparate_impact[sex]")
    shot = screenshot(browser, "evidence-fairness-sex", tmp_path)
    no_exception(browser, "evidence", shot)
    assert "page=fairness" in browser.current_url and "focus=sex" in browser.current_url, browser.current_url


def test_threshold_slider_moves_in_headless_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _, _ = server
    browser.get(f"{url}/?page=fairness&run=adult&focus=sex")
    wait_rendered(browser, "Fairness", "fairness at sex")
    selector = '[data-testid="stMain"] [data-testid="stSlider"] input[type="range"]'
    thumb = browser.find_element(By.CSS_SELECTOR, selector)
    before = float(thumb.get_attribute("value"))
    browser.execute_script("arguments[0].focus()", thumb)
    ActionChains(browser).send_keys(*[Keys.ARROW_LEFT] * 10).perform()
    time.sleep(1.0)
    wait_rendered(browser, "Fairness", "fairness after the slider moved")
    after = float(browser.find_element(By.CSS_SELECTOR, selector).get_attribute("value"))
    assert after < before, (before, after)
    assert f"threshold={after:g}" in browser.current_url, browser.current_url
    shot = screenshot(browser, "fairness-slider-moved", tmp_path)
    no_exception(browser, "the slider", shot)
