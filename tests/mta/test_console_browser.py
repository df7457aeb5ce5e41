"""The web console in a real headless browser (Debian's chromium, driven by selenium through
chromedriver) against a real MTA whose control plane listens on 127.0.0.1 with a token: load
it, see the queue, filter the list, open a message, act on it, see a live event arrive.

One MTA (in a thread of its own: selenium blocks) and one browser for the module.
``SMTPX_CONSOLE_SCREENSHOTS=docs`` also writes the screenshots of docs/ (console-*.png).
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import threading
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from smtpx.mta.app import Mta
from smtpx.mta.routing import FakeDns
from tests.conftest import require_tool
from tests.mta.helpers import config

pytestmark = pytest.mark.interop

TOKEN = "br0wser-t0ken"
WAIT = 15.0  # seconds a page state may take to appear (the page redraws every 5 s at most)
SCREENSHOTS = os.environ.get("SMTPX_CONSOLE_SCREENSHOTS")
T = TypeVar("T")


@dataclass
class Served:
    mta: Mta
    loop: asyncio.AbstractEventLoop
    base: str  # the control plane's URL
    smtp_port: int

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def api(self, path: str) -> Any:
        request = urllib.request.Request(
            self.base + path, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def listing(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.api("/v1/spool/messages")["messages"]
        return messages

    def inject(self, n: int, to: str, sender: str = "a@example.org") -> None:
        text = (
            f"From: {sender}\r\nTo: {to}\r\nSubject: console {n}\r\n"
            f"Message-ID: <c{n}@t>\r\n\r\nhi\r\n"
        )
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=10) as smtp:
            smtp.sendmail(sender, [to], text)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The MTA, its own event loop in a thread; mail for example.net and slow.example
    waits (port 9 is closed). The senders are local (example.org): a bounce, if any, stays
    on this machine."""
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "token").write_text(TOKEN + "\n")
    cfg = config(
        tmp,
        routing={"routes": {"example.net": ["127.0.0.1:9"], "slow.example": ["127.0.0.1:9"]}},
        # Every "send now" is an attempt: enough retries that none bounces.
        spool={"retry_intervals": ["1h"] * 8},
        control={"http": "127.0.0.1:0", "token_file": str(tmp / "token")},
    )
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="console-mta", daemon=True)
    thread.start()

    async def start() -> Mta:
        mta = Mta(cfg, dns=FakeDns())
        return await mta.__aenter__()

    mta = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    base = f"http://127.0.0.1:{mta.control.http_port}"
    served = Served(mta, loop, base, mta.server.ports[0])
    try:
        for n in range(3):
            served.inject(n, f"u{n}@example.net")
        for n in range(3, 5):
            served.inject(n, f"v{n}@slow.example", sender="boss@example.org")
        _until(lambda: all(m["attempt_count"] for m in served.listing()))
        yield served
    finally:
        served.run(mta.__aexit__(None, None, None))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def browser(served: Served) -> Iterator[WebDriver]:
    """Headless chromium through Debian's chromedriver; skips without them (fails under
    SMTPX_REQUIRE_INTEROP=1). Nothing but 127.0.0.1 is ever loaded. (It uses ``served``
    to go first: a page left open would hold the MTA's shutdown on its event stream.)"""
    binary = require_tool("chromium")
    driver_path = require_tool("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _until(condition: Callable[[], Any], timeout: float = WAIT) -> None:
    """For the fixture's plain checks (the browser's own waits are WebDriverWait's)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def wait(driver: WebDriver, condition: Callable[[WebDriver], T]) -> T:
    """``condition`` once true; failing, what the page said, to see why."""
    try:
        # The page redraws its tables whole: an element found a moment ago may be gone.
        return WebDriverWait(
            driver, WAIT, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]
        ).until(condition)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"the page never got there; it says:\n{text[:3000]}") from None


def listed(driver: WebDriver) -> list[str]:
    """The ids in the message list (read at once: the page may redraw it meanwhile)."""
    ids: list[str] = driver.execute_script(
        "return [...document.querySelectorAll('#list tbody tr')].map(row => row.dataset.id)"
    )
    return ids


def open_console(driver: WebDriver, served: Served) -> None:
    """A fresh page (from another one: a new fragment alone does not reload it)."""
    driver.get("about:blank")
    driver.get(served.base + "/console/#token=" + TOKEN)
    wait(driver, lambda d: len(listed(d)) >= 5)


def filter_list(driver: WebDriver, **fields: str) -> None:
    form = driver.find_element(By.ID, "filters")
    form.find_element(By.CSS_SELECTOR, "button[type=reset]").click()
    for name, value in fields.items():
        field = form.find_element(By.NAME, name)
        if field.tag_name == "select":
            Select(field).select_by_visible_text(value)
        else:
            field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def shot(driver: WebDriver, name: str, section: str | None = None) -> None:
    """With SMTPX_CONSOLE_SCREENSHOTS: the window, or one ``section`` of the page."""
    if not SCREENSHOTS:
        return
    path = str(Path(SCREENSHOTS) / f"console-{name}.png")
    if section is None:
        driver.save_screenshot(path)
    else:
        driver.find_element(By.ID, section).screenshot(path)


def test_the_page_shows_the_queue(browser: WebDriver, served: Served) -> None:
    open_console(browser, served)
    assert "token" not in browser.current_url  # read, stored, and gone from the address
    assert browser.execute_script("return sessionStorage.length") == 1
    shape = wait(browser, lambda d: d.find_element(By.ID, "shape").text)
    lines = shape.splitlines()
    assert lines[1].split()[:3] == ["TOTAL", "5", "5"]
    assert [line.split()[:2] for line in lines[2:]] == [["example.net", "3"], ["slow.example", "2"]]
    assert "mx.test" in browser.find_element(By.ID, "server").text
    assert "5 queued" in browser.find_element(By.ID, "counts").text
    bars = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#throughput rect.deferred"))
    assert bars
    reasons = browser.find_element(By.ID, "reasons").text
    assert reasons.splitlines()[1].startswith("5 ")  # five deferrals, one reason


def test_it_asks_for_the_token_it_lacks(browser: WebDriver, served: Served) -> None:
    browser.get(served.base + "/console/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    login = wait(browser, lambda d: d.find_element(By.ID, "login"))
    wait(browser, lambda d: login.is_displayed())
    assert not browser.find_element(By.ID, "main").is_displayed()
    token = browser.find_element(By.ID, "token")
    token.send_keys("wrong")
    login.find_element(By.TAG_NAME, "button").click()
    wait(browser, lambda d: "refused" in d.find_element(By.ID, "login-error").text)
    token.send_keys(TOKEN)
    login.find_element(By.TAG_NAME, "button").click()
    wait(browser, lambda d: len(listed(d)) >= 5)
    assert not login.is_displayed()


def test_the_list_filters_as_the_cli_does(browser: WebDriver, served: Served) -> None:
    open_console(browser, served)
    filter_list(browser, recipient="@slow\\.example$")
    wait(browser, lambda d: len(listed(d)) == 2)
    assert "2 message(s)" in browser.find_element(By.ID, "list-count").text
    filter_list(browser, sender="boss", recipient="v3@")
    wait(browser, lambda d: len(listed(d)) == 1)
    filter_list(browser, id="<c1@t>")  # any id a message goes by: here its Message-ID
    wait(browser, lambda d: len(listed(d)) == 1)
    filter_list(browser, status="frozen")
    wait(browser, lambda d: len(listed(d)) == 0)
    filter_list(browser, select="exists_header Subject /console [01]$/")
    wait(browser, lambda d: len(listed(d)) == 2)
    filter_list(browser, sender="(")  # a bad regex: the API's 400, said on the page
    wait(browser, lambda d: "sender" in d.find_element(By.ID, "filter-error").text)
    filter_list(browser)
    wait(browser, lambda d: len(listed(d)) >= 5 and not d.find_element(By.ID, "filter-error").text)


def test_open_a_message_and_act_on_it(browser: WebDriver, served: Served) -> None:
    open_console(browser, served)
    victim = next(m for m in served.listing() if "v4@" in str(m))
    browser.find_element(By.CSS_SELECTOR, f'#list tr[data-id="{victim["id"]}"]').click()
    view = wait(browser, lambda d: d.find_element(By.ID, "message"))
    wait(browser, lambda d: view.is_displayed())
    assert browser.find_element(By.ID, "message-id").text == victim["id"]
    headers = browser.find_element(By.ID, "message-headers").text
    assert "Subject: console 4" in headers
    assert "v4@slow.example" in browser.find_element(By.ID, "message-fields").text

    def act(action: str, queue: str) -> None:
        browser.find_element(By.CSS_SELECTOR, f'#actions [data-action="{action}"]').click()
        wait(browser, lambda d: d.find_element(By.ID, "action-result").text == f"{action}: done")
        field = '#message-fields [data-field="queue"]'
        wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, field).text == queue)
        [shown] = served.api("/v1/spool/messages?id=" + victim["id"])["messages"]
        assert shown["queue"] == queue, action

    recover = browser.find_element(By.CSS_SELECTOR, '#actions [data-action="recover"]')
    assert not recover.is_enabled()  # nothing to recover from
    act("freeze", "frozen")
    row = f'#list tr[data-id="{victim["id"]}"]'
    wait(browser, lambda d: "frozen" in d.find_element(By.CSS_SELECTOR, row).text)
    shot(browser, "message", "message")
    act("send", "active")
    act("remove", "removed")
    assert recover.is_enabled()
    act("recover", "frozen")  # a recovered message waits, frozen, for an operator
    act("send", "active")


def test_a_live_event_arrives(browser: WebDriver, served: Served) -> None:
    open_console(browser, served)
    wait(browser, lambda d: d.find_element(By.ID, "live").get_attribute("class") == "on")
    served.inject(7, "late@example.net")
    spooled = wait(
        browser,
        lambda d: d.find_elements(By.CSS_SELECTOR, '#event-list li[data-kind="spooled"]'),
    )
    new_id = spooled[0].get_attribute("data-id")
    assert new_id and new_id in spooled[0].text
    wait(browser, lambda d: new_id in listed(d))  # the list redraws on the event
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, '#event-list li[data-kind="delayed"]'))
    shot(browser, "overview")  # the queue, the rates and some events
