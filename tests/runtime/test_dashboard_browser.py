"""The dashboard in a real headless browser (Debian's chromium, driven by playwright) against ``shunter serve``.

Every wait is on a condition of the page (playwright's ``expect``, with a
timeout), never a fixed sleep. Steps that must wait read a gate file
(serving.py), so the test decides when a log grows and when a build ends.
Each test checks that the page logged no console error and raised nothing.

A screenshot of a build page with a running step is written to the test's
tmp dir; set ``SHUNTER_DASHBOARD_SCREENSHOT=docs/dashboard.png`` to refresh
the README's picture with it.

Needs ``chromium`` (``apt-get install chromium``; .ci/run installs it) and
the ``playwright`` package (the [test] extra); playwright's own browser
download is never used. Without them the tests are skipped locally and
fail under CI.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.client import Client

from .serving import gate_script, served

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
try:
    from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]

if sync_playwright is None or not os.path.exists(CHROMIUM):
    reason = "needs the playwright package and Debian's chromium (see .ci/run)"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

WAIT = 15_000  # ms: the longest any page condition may take on a loaded machine


def pipelines(tmp: Path) -> dict[str, str]:
    talk = ("'echo started ${{ variables.MSG }}; while [ ! -e " + str(tmp / "one") + " ]; do sleep 0.05; done; "
            "echo middle; while [ ! -e " + str(tmp / "two") + " ]; do sleep 0.05; done; echo finished'")  # fmt: skip
    flaky = f"'if [ -e {tmp / 'fixed'} ]; then echo fixed; else echo broken; exit 1; fi'"
    return {
        "talk": ("version: v3.0\nname: talk\nvariables: {MSG: default}\n"
                 "concurrency: {group: talk, max-parallel: 1, queue-length: 5, queue-timeout-minutes: 30}\n"
                 "stages:\n  - name: build\n    jobs:\n      work:\n        steps:\n"
                 "          - {id: checkout, run: 'echo cloning into the workspace; echo checked out main'}\n"
                 f"          - {{id: talk, run: {talk}}}\n"
                 "      lint: {steps: [{id: lint, run: 'echo 12 files checked, no problems'}]}\n"
                 "  - name: ship\n    jobs:\n      deploy: {steps: [{id: upload, run: 'echo uploaded'}]}\n"),
        "flaky": f"version: v3.0\nname: flaky\njobs:\n  check:\n    steps: [{{id: probe, run: {flaky}}}]\n",
        "blocker": f"version: v3.0\nname: blocker\njobs:\n  hold:\n    steps: [{{id: hold, run: {gate_script(tmp / 'unblock')}}}]\n",
    }  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("dashboard")
    with served(tmp, pipelines(tmp), agents=2) as url:
        yield url, tmp
        for name in ("one", "two", "fixed", "unblock"):
            (tmp / name).touch()  # let whatever still runs end


@pytest.fixture(scope="module")
def browser(server: Any) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM,
                                             args=["--no-sandbox", "--disable-dev-shm-usage"])  # fmt: skip
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: tuple[str, Path]) -> Iterator[Page]:
    """A fresh page at the server; fails the test if the page logged an error or raised."""
    url, _ = server
    context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=url)
    page = context.new_page()
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "assert"):
            problems.append(f"console {message.type}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.set_default_timeout(WAIT)
    yield page
    context.close()
    assert problems == [], problems


def visit(page: Page, where: str) -> None:
    page.goto("/" + where)
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")  # the event stream is open
    page.evaluate("window.__loadedOnce = true")  # gone if the page reloads


def still_the_same_page(page: Page) -> None:
    assert page.evaluate("window.__loadedOnce") is True, "the page was reloaded"


def test_a_build_submitted_from_the_page_runs_live_with_its_log(page: Page, server: tuple[str, Path],
                                                                tmp_path: Path) -> None:  # fmt: skip
    url, tmp = server
    visit(page, "#/pipelines")
    card = page.locator('[data-pipeline="talk"]')
    expect(card.locator("h2")).to_have_text("talk")
    card.locator('[data-action="run"]').click()
    form = card.locator('[data-testid="submit-form"]')
    expect(form.locator('input[data-var="MSG"]')).to_have_value("default")  # the declared default
    form.locator('input[data-var="MSG"]').fill("from-the-page")
    form.locator('[data-action="submit"]').click()
    expect(page).to_have_url(re.compile(r"#/builds/talk\.\d+$"))
    build_id = page.url.rsplit("/", 1)[1]
    status = page.locator("#build-status")
    expect(status).to_have_attribute("data-status", "RUNNING")
    log = page.locator("#log")
    expect(log).to_contain_text("started from-the-page")  # the running step is followed at once
    expect(log).not_to_contain_text("middle")
    (tmp / "one").touch()
    expect(log).to_contain_text("middle")  # grows while the step runs
    expect(page.locator('.step[data-step="talk"]')).to_have_attribute("data-status", "RUNNING")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    target = os.environ.get("SHUNTER_DASHBOARD_SCREENSHOT")
    if target:
        shutil.copyfile(tmp_path / "dashboard.png", target)
    (tmp / "two").touch()
    expect(status).to_have_attribute("data-status", "SUCCEED")
    expect(page.locator('.job[data-job="deploy"]')).to_have_attribute("data-status", "SUCCEED")
    still_the_same_page(page)
    assert Client(url).build(build_id)["variables"] == {"MSG": "from-the-page"}
    for name in ("one", "two"):
        (tmp / name).unlink()


def test_the_builds_list_follows_a_build_from_running_to_succeed(page: Page, server: tuple[str, Path]) -> None:
    url, tmp = server
    visit(page, "#/")
    build = Client(url).submit("talk")
    row = page.locator(f'#builds tr[data-build-id="{build["id"]}"]')
    expect(row.locator("td.status .badge")).to_have_attribute("data-status", "RUNNING")
    (tmp / "one").touch()
    (tmp / "two").touch()
    expect(row.locator("td.status .badge")).to_have_attribute("data-status", "SUCCEED")
    expect(page.locator('[data-stat="builds running"] .n')).to_have_text("0")
    still_the_same_page(page)
    for name in ("one", "two"):
        (tmp / name).unlink()


def test_a_queued_build_shows_its_position_and_deadline_and_is_cancelled_from_the_page(
    page: Page, server: tuple[str, Path]
) -> None:
    url, tmp = server
    client = Client(url)
    running, queued = client.submit("talk"), client.submit("talk")
    assert queued["status"] == "QUEUE"
    visit(page, f"#/builds/{queued['id']}")
    expect(page.locator("#build-status")).to_have_attribute("data-status", "QUEUE")
    expect(page.locator("#queue-position")).to_have_text("1")
    deadline = page.locator('[data-testid="queue-deadline"]')
    expect(deadline).to_contain_text(re.compile(r"\(in (29|30)m \d\ds\)"))  # queue-timeout-minutes: 30
    assert deadline.get_attribute("data-deadline", timeout=WAIT)
    expect(page.locator("#queue-note")).to_contain_text(running["id"])  # what it waits for
    page.locator('a[data-tab="queue"]').click()
    group = page.locator('[data-group="talk"]')
    row = group.locator(f'tr[data-build-id="{queued["id"]}"]')
    expect(row.locator("td").first).to_have_text("1")
    expect(row.locator(".deadline")).to_contain_text("in ")
    expect(group).to_contain_text(running["id"])
    page.go_back()
    page.locator('[data-action="cancel"]').click()
    expect(page.locator("#build-status")).to_have_attribute("data-status", "CANCELED")
    expect(page.locator('[data-action="cancel"]')).to_be_disabled()
    (tmp / "one").touch()
    (tmp / "two").touch()
    assert client.wait(running["id"])["status"] == "SUCCEED"
    for name in ("one", "two"):
        (tmp / name).unlink()


def test_retries_from_the_page_failed_only_step_job_and_whole(page: Page, server: tuple[str, Path]) -> None:
    url, tmp = server
    client = Client(url)
    build = client.wait(client.submit("flaky")["id"])
    assert build["status"] == "FAILED"
    visit(page, f"#/builds/{build['id']}")
    status = page.locator("#build-status")
    expect(status).to_have_attribute("data-status", "FAILED")
    expect(page.locator("#log")).to_contain_text("broken")
    run = page.locator('[data-meta="run"]')

    def retry(action: str, outcome: str, execute_count: int) -> None:
        page.locator(f'[data-action="{action}"]').first.click()
        expect(run).to_have_text(f"run {execute_count}")
        expect(status).to_have_attribute("data-status", outcome)

    retry("retry-failed", "FAILED", 2)  # still broken
    (tmp / "fixed").touch()
    retry("retry-step", "SUCCEED", 3)
    expect(page.locator('.job[data-job="check"] details.attempts summary')).to_have_text("attempts (3)")
    retry("retry-job", "SUCCEED", 4)
    retry("retry", "SUCCEED", 5)
    expect(page.locator('[data-action="retry-failed"]')).to_be_disabled()  # nothing failed is left
    attempts = page.locator('.job[data-job="check"] details.attempts')
    attempts.locator("summary").click()
    steps = attempts.locator(".step-attempts tbody tr")
    expect(steps).to_have_count(5)  # one step attempt per run, each with its exit code and reason
    expect(steps.first).to_contain_text(re.compile(r"probe #1.*FAILED.*exit 1.*exit code 1"))
    expect(steps.last).to_contain_text(re.compile(r"probe #5.*SUCCEED.*exit 0"))
    still_the_same_page(page)
    (tmp / "fixed").unlink()


def test_nodes_and_waiting_jobs(page: Page, server: tuple[str, Path]) -> None:
    url, tmp = server
    client = Client(url)
    held = [client.submit("blocker") for _ in range(3)]  # two agents: the third job waits
    visit(page, "#/nodes")
    node = page.locator('[data-node="n1"]')
    expect(node).to_contain_text("local")
    expect(node).to_contain_text("connected")
    expect(node.locator(".agent.busy")).to_have_count(2)
    expect(node.locator('.agent[data-agent="n1/0"]')).to_contain_text("blocker.")
    page.locator('a[data-tab="queue"]').click()
    waiting = page.locator(f'#waiting-jobs tr[data-build-id="{held[2]["id"]}"]')
    expect(waiting).to_contain_text("no-free-agent")
    expect(waiting.locator(".deadline")).to_contain_text("in ")
    waiting.locator("a").first.click()  # the build page says why its job waits
    why = page.locator('.job[data-job="hold"] [data-testid="job-waiting"]')
    expect(why).to_contain_text(re.compile(r"#1 waiting \(no-free-agent\): no free agent .* deadline .*\(in "))
    page.go_back()
    (tmp / "unblock").touch()
    expect(page.locator("#waiting-jobs")).to_contain_text("No job is waiting.")
    for build in held:
        assert client.wait(build["id"])["status"] == "SUCCEED"
    page.locator('a[data-tab="nodes"]').click()
    expect(node.locator(".agent.busy")).to_have_count(0)
    (tmp / "unblock").unlink()


def test_a_token_is_kept_for_the_tab_and_sent(page: Page, server: tuple[str, Path]) -> None:
    """The token field: kept in sessionStorage (this tab) and sent as a bearer header on every API call."""
    visit(page, "#/")
    page.locator("#token").fill("t0ken")
    page.locator("#token-form button[type=submit]").click()
    expect(page.locator(".toast").last).to_have_text("Token set for this browser tab")
    assert page.evaluate("sessionStorage.getItem('shunter.token')") == "t0ken"
    sent: list[tuple[str, str | None]] = []
    page.on("request", lambda request: sent.append((request.url, request.headers.get("authorization"))))
    page.reload()
    expect(page.locator("#token")).to_have_value("t0ken")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(page.locator('[data-stat="builds running"]')).to_be_visible()
    api = [(where, token) for where, token in sent if "/v1/" in where]
    assert any("/v1/events" in where for where, _ in api) and any("/v1/stats" in where for where, _ in api), api
    assert {token for _, token in api} == {"Bearer t0ken"}, api
    page.locator("#token-clear").click()
    expect(page.locator("#token")).to_have_value("")
    assert page.evaluate("sessionStorage.getItem('shunter.token')") is None


def test_a_server_with_tokens_serves_the_page_and_takes_the_token_from_its_field(
    browser: Browser, tmp_path: Path
) -> None:
    """The page loads without a token, says the API needs one, and goes live once it is pasted."""
    token = "dashboard-token-0123456789"
    with served(tmp_path, {"flaky": pipelines(tmp_path)["flaky"]}, token=token) as url:
        build = Client(url, token).wait(Client(url, token).submit("flaky")["id"])
        context = browser.new_context(viewport={"width": 1360, "height": 900}, base_url=url)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.set_default_timeout(WAIT)
        try:
            page.goto("/#/")
            expect(page.locator("#conn")).to_have_attribute("data-state", "token")
            expect(page.locator("#token-form")).to_have_class(re.compile(r"\bneeded\b"))
            page.locator("#token").fill(token)
            page.locator("#token-form button[type=submit]").click()
            expect(page.locator("#conn")).to_have_attribute("data-state", "live")
            expect(page.locator("#token-form")).not_to_have_class(re.compile(r"\bneeded\b"))
            row = page.locator(f'#builds tr[data-build-id="{build["id"]}"]')
            expect(row.locator("td.status .badge")).to_have_attribute("data-status", "FAILED")
            row.locator("a").first.click()
            expect(page.locator("#log")).to_contain_text("broken")  # the log stream carries the token too
        finally:
            context.close()
    # Only the refusals before the token was pasted (the browser logs each 401 it gets).
    assert problems and all("401" in problem for problem in problems), problems
