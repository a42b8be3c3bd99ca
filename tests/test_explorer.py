"""The explorer page in a real headless Chromium (Debian's chromium and chromium-driver, driven by selenium).

The page is served by the real app on 127.0.0.1; the test picks a dataset,
looks keys up, reads the version history and a version's changes, and keeps
a screenshot in test-artifacts/explorer.png.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from flask import Flask
from selenium.webdriver.common.by import By
from werkzeug.serving import make_server

from combe.consumer.server import Tokens, create_app
from tests.support.served import ANN_JSON, MOVIE_TAGS, Published, publish_all, publish_nested

# Selenium's driver and wait modules (a third of a second) are imported where used: every worker collects this
# module, and make check deselects it (By, a table of names, costs nothing).
if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1100")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    return publish_all(tmp_path_factory.mktemp("explorer"))


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """``app`` on a free port of 127.0.0.1, in a thread; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="explorer-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        app.extensions["combe"].close()


@pytest.fixture(scope="module")
def base_url(published: Published) -> Iterator[str]:
    with serving(create_app(str(published.store), ["movies", "counts"])) as base:
        yield base


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def waiting(browser: WebDriver) -> WebDriverWait[WebDriver]:
    """A ten-second wait on the page (selenium's wait module imported here, see above)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, 10)


def wait_for(browser: WebDriver, css: str) -> None:
    waiting(browser).until(lambda b: b.find_elements(By.CSS_SELECTOR, css))


def look_up(browser: WebDriver, key: str) -> None:
    message = browser.find_element(By.ID, "lookup-message")
    browser.execute_script("arguments[0].textContent = ''", message)
    field = browser.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "#lookup button[type=submit]").click()
    waiting(browser).until(lambda b: message.text)


def test_explorer_looks_up_keys_and_shows_history_and_changes(browser: WebDriver, base_url: str,
                                                               published: Published) -> None:
    browser.get(base_url + "/")
    wait_for(browser, "body[data-dataset=movies]")
    facts = browser.find_element(By.ID, "facts").text
    assert "3" in facts and str(len(published.latest("movies"))) in facts
    assert "commit=4f2a9c1 data.date=2026-11-27" in facts  # the tags of the version served

    look_up(browser, "m2")
    assert json.loads(browser.find_element(By.ID, "record").text) == published.latest("movies")["m2"]
    assert browser.find_element(By.ID, "lookup-message").text == "version 3"

    versions = [row.get_attribute("data-version")
                for row in browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")]
    assert versions == ["3", "2", "1"]
    tags = {row.get_attribute("data-version"): row.find_element(By.CSS_SELECTOR, "td.tags").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#versions tbody tr")}
    assert tags == {"3": " ".join(f"{k}={v}" for k, v in MOVIE_TAGS[3].items()), "2": "", "1": ""}
    browser.find_element(By.CSS_SELECTOR, "#versions tr[data-version='2'] button").click()
    wait_for(browser, "body[data-changes='2']")
    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")[:2]]
            for row in browser.find_elements(By.CSS_SELECTOR, "#changes tbody tr")]
    assert rows == [["removed", "m1"], ["added", "m100"], ["updated", "m2"]]
    assert "+1 added, ~1 updated, -1 removed since version 1" in browser.find_element(By.ID, "changes-summary").text
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "explorer.png"))

    look_up(browser, "m1")
    assert "no record with key 'm1'" in browser.find_element(By.ID, "lookup-message").text
    assert not browser.find_element(By.ID, "record").is_displayed()

    from selenium.webdriver.support.ui import Select

    Select(browser.find_element(By.ID, "dataset")).select_by_value("counts")
    wait_for(browser, "body[data-dataset=counts]")
    look_up(browser, "-2")
    assert json.loads(browser.find_element(By.ID, "record").text) == {"key": -2, "n": -2, "square": 4}
    look_up(browser, "two")
    assert "int64" in browser.find_element(By.ID, "lookup-message").text

    errors = [entry for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and "the server responded with a status of 4" not in entry["message"]]
    assert errors == []


def test_explorer_asks_for_a_token_when_the_server_needs_one(browser: WebDriver, published: Published) -> None:
    token = "explorer-token-0123456789abcdef"
    with serving(create_app(str(published.store), ["movies"], tokens=Tokens.parse(token, "test"))) as base:
        browser.get(base + "/")
        waiting(browser).until(lambda b: b.find_element(By.ID, "auth").is_displayed())
        browser.find_element(By.ID, "token").send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#auth button[type=submit]").click()
        wait_for(browser, "body[data-dataset=movies]")
        assert not browser.find_element(By.ID, "auth").is_displayed()
        look_up(browser, "m2")
        assert json.loads(browser.find_element(By.ID, "record").text) == published.latest("movies")["m2"]


def test_explorer_compares_versions_and_shows_a_keys_history(browser: WebDriver, base_url: str,
                                                              published: Published) -> None:
    browser.get(base_url + "/")
    wait_for(browser, "body[data-dataset=movies]")
    browser.find_element(By.ID, "diff-from").send_keys("1")
    browser.find_element(By.CSS_SELECTOR, "#compare button[type=submit]").click()
    wait_for(browser, "body[data-diff='1-3']")  # "to" left empty: the version served
    rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#diff tbody tr")]
    assert [row[:2] for row in rows] == [["removed", "m1"], ["added", "m100"], ["added", "m101"],
                                         ["updated", "m2"], ["updated", "m3"], ["removed", "m5"]]
    history = published.expected["movies"]
    m3 = next(row for row in rows if row[1] == "m3")
    assert (json.loads(m3[2]), json.loads(m3[3])) == (history[1]["m3"], history[3]["m3"])
    assert "+2 added, ~2 updated, -2 removed" in browser.find_element(By.ID, "diff-summary").text

    field = browser.find_element(By.ID, "diff-from")
    field.clear()
    field.send_keys("9")
    browser.find_element(By.CSS_SELECTOR, "#compare button[type=submit]").click()
    waiting(browser).until(lambda b: "no announced version 9" in b.find_element(By.ID, "diff-summary").text)
    assert not browser.find_element(By.ID, "diff").is_displayed()

    key = browser.find_element(By.ID, "key")
    key.clear()
    key.send_keys("m2")
    browser.find_element(By.ID, "show-history").click()
    wait_for(browser, "body[data-history=m2]")
    changes = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
               for row in browser.find_elements(By.CSS_SELECTOR, "#key-history tbody tr")]
    assert [(row[0], row[1]) for row in changes] == [("2", "updated"), ("1", "added")]
    assert json.loads(changes[0][3]) == history[2]["m2"]
    assert browser.find_element(By.ID, "key-history-title").text == "History of m2"
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "explorer-diff-history.png"))
    errors = [entry for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and "the server responded with a status of 4" not in entry["message"]]
    assert errors == []


@pytest.fixture(scope="module")
def nested_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    store = str(tmp_path_factory.mktemp("explorer-nested"))
    publish_nested(store)
    with serving(create_app(store, ["nested"])) as base:
        yield base


def test_explorer_shows_nested_values(browser: WebDriver, nested_url: str) -> None:
    browser.get(nested_url + "/")
    wait_for(browser, "body[data-dataset=nested]")
    schema = [[cell.get_attribute("textContent") for cell in row.find_elements(By.TAG_NAME, "td")]
              for row in browser.find_elements(By.CSS_SELECTOR, "#schema tbody tr")]  # in a closed <details>
    assert schema[2] == ["who", "struct<id:int64,name:string,age:int64>"]

    look_up(browser, "a")
    shown = browser.find_element(By.ID, "record").text
    assert json.loads(shown) == ANN_JSON
    assert shown.splitlines()[3] == '  "who": {"id":1,"name":"Ann","age":null},'  # a field a line, values compact

    browser.find_element(By.CSS_SELECTOR, "#versions tr[data-version='2'] button").click()
    wait_for(browser, "body[data-changes='2']")
    cells = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
             for row in browser.find_elements(By.CSS_SELECTOR, "#changes tbody tr")]
    # JSON with one field per line, each value compact on its field's line.
    assert cells[0][:2] == ["updated", "b"]
    assert json.loads(cells[0][2]) == {"key": "b", "tags": [], "who": None, "ids": None, "raw": None, "doc": None}
    assert cells[0][3].splitlines()[3] == '  "who": {"id":2,"name":null,"age":40},'
    assert cells[1][:2] == ["added", "c"] and cells[1][3].splitlines()[4] == '  "ids": {},'
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "explorer-nested.png"))
