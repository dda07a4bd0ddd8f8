"""A real headless Chromium for the viewer tests: the system's, never a downloaded one.

Selenium is given the chromedriver and the browser binary explicitly, and Selenium
Manager is told to stay offline, so nothing is fetched. Without a browser the tests
that need one skip, saying how to install it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("LLMWB_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LLMWB_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1600",
)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium driven by selenium, shared by the session's viewer tests."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
    if missing:
        pytest.skip(
            f"no headless browser: {', '.join(missing)} not found; install it with "
            "apt-get install -y chromium chromium-driver (as .ci/run does)"
        )
    pytest.importorskip("selenium", reason="selenium is not installed: pip install -e '.[test]'")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Selenium Manager must never download a driver or a browser
    saved = {key: os.environ.get(key) for key in ("SE_OFFLINE", "SE_AVOID_STATS")}
    os.environ["SE_OFFLINE"] = "true"
    os.environ["SE_AVOID_STATS"] = "true"
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Page:
    """A viewer page opened in the browser, after its script ran."""

    def __init__(self, driver: Any, path: Path) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.by = By
        driver.get(path.resolve().as_uri())
        WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
        )

    def text(self, css: str) -> str:
        """The visible text of the first element ``css`` selects."""
        return str(self.driver.find_element(self.by.CSS_SELECTOR, css).text)

    def texts(self, css: str) -> list[str]:
        """The visible text of every element ``css`` selects."""
        return [str(e.text) for e in self.driver.find_elements(self.by.CSS_SELECTOR, css)]

    def screenshot(self, path: Path, request: pytest.FixtureRequest) -> Path:
        """Save what the browser shows and attach the file's path to the test report."""
        self.driver.save_screenshot(str(path))
        request.node.user_properties.append(("screenshot", str(path)))
        return path


@pytest.fixture
def open_page(browser: Any) -> Any:
    """Open a viewer page: ``open_page(path)`` returns a :class:`Page`."""
    return lambda path: Page(browser, path)


def big_run(path: Path, calls: int = 250) -> Path:
    """Record a run of ``4 * calls`` facts (model call, tool call, artifact, gate) at ``path``."""
    from pytest_llmwb import Cost, Dag, GateDecision, ModelResponse, Reviewer, Run, Usage

    dag = (
        Dag("big")
        .model("plan", model="m-1")
        .tool("fetch")
        .gate("check")
        .chain("plan", "fetch", "check")
        .edge("check", "plan")
    )

    def answer(request: Any) -> ModelResponse:
        return ModelResponse(
            content=f"step {request.messages[-1].content}",
            finish_reason="stop",
            usage=Usage(input_tokens=10, output_tokens=5),
        )

    def price(request: Any, response: Any) -> Cost:
        return Cost(amount="0.0001", source="test prices")

    def decide(subject: Any) -> GateDecision:
        return GateDecision(decision="approved", reviewer=Reviewer(id="p", kind="policy"))

    with Run("big", dag=dag) as run:
        for index in range(calls):
            run.model_io(
                {"model": "m-1", "messages": [{"role": "user", "content": str(index)}]},
                answer,
                node="plan",
                cost=price,
            )
            run.tool_call("fetch", {"index": index}, lambda index=index: {"got": index})
            made = run.artifact("page", {"index": index}, node="fetch")
            run.gate("check", subject=made, reviewer=decide)
    run.save(path)
    return path


# the refunds agent in pytester directories, shared with the snapshot tests
from snapshot.conftest import refunds  # noqa: E402, F401
