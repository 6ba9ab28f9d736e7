"""The dashboard in a real browser: Debian's chromium, driven by Selenium through
``chromedriver``, against the app served in a thread on a real database.

No browser can be downloaded here, and none is: without ``chromium`` and
``chromedriver`` these tests fail, naming the packages to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import greet
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from web_support import dead_job, job_state, unknown_outcome_job

from pgqueue_py.client import Queue
from pgqueue_py.web import WebConfig
from pgqueue_py.web.server import BackgroundServer

CHROMIUM = ("chromium", "chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
SCREENSHOT_ENV = "PGQUEUE_DASHBOARD_SCREENSHOT"
"""Where ``test_queues_page_screenshot`` also saves its PNG (the README's picture)."""

TOKEN = "browser-test-token"
WAIT = 20.0
WINDOW_SIZE = (1280, 800)


def chromium_binary() -> str:
    for name in CHROMIUM:
        if path := shutil.which(name):
            return path
    pytest.fail(f"the browser tests need Debian's chromium, which is not installed: {INSTALL}",
                pytrace=False)  # fmt: skip


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One browser for the module: starting chromium costs more than most tests here."""
    binary = chromium_binary()
    tmp_path = tmp_path_factory.mktemp("chromium")
    if not os.access(CHROMEDRIVER, os.X_OK):
        pytest.fail(f"the browser tests need {CHROMEDRIVER} from Debian's chromium-driver,"
                    f" which is not installed: {INSTALL}", pytrace=False)  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,800", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)  # fmt: skip
    driver = webdriver.Chrome(
        service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "driver.log")),
        options=options,
    )
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def browser(chromium: WebDriver) -> WebDriver:
    """The module's browser as new: no page, no cookie (no login), the usual size. Each
    test serves the dashboard on a port of its own, and cookies ignore the port."""
    chromium.get("about:blank")
    # Every site's cookies: WebDriver's own delete reaches only the page's domain.
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.set_window_size(*WINDOW_SIZE)
    return chromium


@pytest.fixture
def queue(dsn: str) -> Iterator[Queue]:
    with Queue(dsn, max_connections=4) as q:
        yield q


@pytest.fixture
def board(queue: Queue) -> Iterator[str]:
    """The dashboard's address, token-protected as beyond loopback; the browser logs in
    by opening it once with ``?token=``."""
    with BackgroundServer(queue, WebConfig(token=TOKEN)) as server:
        yield server.url


def log_in(browser: WebDriver, board: str, path: str = "/") -> None:
    sep = "&" if "?" in path else "?"
    browser.get(f"{board}{path}{sep}token={TOKEN}")
    WebDriverWait(browser, WAIT).until(ec.presence_of_element_located((By.TAG_NAME, "main")))
    assert "token=" not in browser.current_url  # traded for a cookie


def test_retry_a_dead_job_by_clicking_makes_it_available(
    browser: WebDriver, board: str, queue: Queue
) -> None:
    other = dead_job(queue, name="Other")
    job_id = dead_job(queue)
    log_in(browser, board, "/dead")

    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]')
    assert "smtp said no" in row.text
    row.find_element(By.XPATH, ".//button[normalize-space()='Retry']").click()

    notice = WebDriverWait(browser, WAIT).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, ".notice"))
    )
    assert f"Job {job_id} is available again." in notice.text
    assert job_state(queue, job_id) == "available"
    assert job_state(queue, other) == "dead"  # only the clicked one
    remaining = browser.find_elements(By.CSS_SELECTOR, "tr[data-job-id]")
    assert [r.get_attribute("data-job-id") for r in remaining] == [str(other)]


def test_resolve_an_unknown_outcome_through_its_form(
    browser: WebDriver, board: str, queue: Queue, dsn: str
) -> None:
    job_id = unknown_outcome_job(queue)
    log_in(browser, board, "/outcomes")
    browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] a').click()

    form = WebDriverWait(browser, WAIT).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "form.resolve"))
    )
    form.find_element(By.CSS_SELECTOR, "input[name=ran][value=yes]").click()
    form.find_element(By.NAME, "result").send_keys('{"charge_id": "ch_42"}')
    form.find_element(By.XPATH, ".//button[normalize-space()='Resolve']").click()

    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "is settled")
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select status, result from pgq.once_markers where job_id = %s and effect_key = %s",
            (job_id, "charge-card"),
        ).fetchone()
    assert row == ("done", {"charge_id": "ch_42"})
    outcome = browser.find_element(By.CSS_SELECTOR, 'tr[data-effect-key="charge-card"]')
    assert "done" in outcome.text and "ch_42" in outcome.text
    assert not browser.find_elements(By.CSS_SELECTOR, "form.resolve")


def test_counts_refresh_live_without_reloading(
    browser: WebDriver, board: str, queue: Queue
) -> None:
    queue.add(greet, {"name": "Ada", "times": 1}, queue="mail")
    log_in(browser, board)
    cell = browser.find_element(By.CSS_SELECTOR, 'tr[data-queue="mail"] [data-field="available"]')
    assert cell.text == "1"
    browser.execute_script("window.pgqueueMarker = 'same page';")

    queue.add_many(greet, [{"name": "Ada", "times": 1}] * 4, queue="mail")

    WebDriverWait(browser, WAIT).until(lambda _: cell.text == "5")
    assert browser.execute_script("return window.pgqueueMarker;") == "same page"


def test_pause_and_resume_by_clicking(browser: WebDriver, board: str, queue: Queue) -> None:
    queue.add(greet, {"name": "Ada", "times": 1}, queue="mail")
    log_in(browser, board)

    browser.find_element(By.XPATH, "//tr[@data-queue='mail']//button[.='Pause']").click()
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "is paused")
    )
    assert queue.stats()[0].paused
    browser.find_element(By.XPATH, "//tr[@data-queue='mail']//button[.='Resume']").click()
    WebDriverWait(browser, WAIT).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".notice"), "is resumed")
    )
    assert not queue.stats()[0].paused


def test_queues_page_screenshot(
    browser: WebDriver, board: str, queue: Queue, dsn: str, tmp_path: Path
) -> None:
    """A picture of the queues page with some of everything; saved to
    $PGQUEUE_DASHBOARD_SCREENSHOT too when set (docs/dashboard.png)."""
    for _ in range(2):
        dead_job(queue)
    unknown_outcome_job(queue)
    queue.add_many(greet, [{"name": "Ada", "times": 1}] * 12, queue="mail")
    queue.add_many(greet, [{"name": "Bob", "times": 1}] * 3, queue="reports")
    [running] = queue.claim("web-1", queues=["reports"])
    queue.complete(running.id, running.lease_token)
    queue.claim("web-1", queues=["mail"], batch=3)
    queue.pause("reports")
    with psycopg.connect(dsn) as conn:
        conn.execute("update pgq.jobs set run_at = now() - interval '95 seconds'"
                     " where queue = 'mail' and state = 'available'")  # fmt: skip
    browser.set_window_size(1240, 560)
    log_in(browser, board)

    path = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(path))

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr[data-queue]")) == 3
    if target := os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(path, target)
