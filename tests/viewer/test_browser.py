"""The viewer page in a real headless Chromium: what a person sees once the script ran.

Each test keeps a screenshot under its ``tmp_path`` and attaches the path to its report
(``user_properties``, e.g. in ``--junitxml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from snapshot.refunds import agent, record

from pytest_llmwb import PayloadDriftError, Run
from pytest_llmwb.viewer import view_bundles
from pytest_llmwb.viewer.report import failed_test_page

from .conftest import big_run
from .test_page import APPROVED, ATTACK, REJECTED


def test_a_run_shows_its_gate_cards_and_node_costs(
    tmp_path: Path, open_page: Any, request: pytest.FixtureRequest
) -> None:
    path, _ = view_bundles([str(APPROVED)], tmp_path / "run.html")
    page = open_page(path)
    page.screenshot(tmp_path / "run.png", request)
    card = page.text('[data-gate="approve_refund"]')
    assert card.splitlines()[:2] == ["approve_refund", "approved"]
    for line in (
        "reviewer\npolicy refund-policy@2026-11",
        "policy\nrefund-policy v2026-11",
        "subject\nvalue",
        "digest\nsha256:9f50fc43273d",
        "reason\n249.00 is within the 500.00 auto-approval limit",
        "what led to it (2 facts on the path classify → lookup_order → approve_refund):",
        "asked: I want my money back for B-2002.",
        "spent on that path: 1 call(s), 30 tokens, 0.000019 USD",
    ):
        assert line in card
    assert "draft_reply" not in card  # after the gate: no cause of it
    nodes = page.texts("#dag g.node")
    assert nodes[0] == "classify\nmodel\n30 tok · 0.000019 USD"
    assert "draft_reply\nmodel\n60 tok · 0.000049 USD" in nodes
    assert "lookup_order\ntool\nno model calls" in nodes
    assert "0.000068 USD\ncost" in page.text("header")
    costs = page.text("#costs")
    assert "draft_reply 1 41 19 60 0.000049 USD" in costs.replace("\n", " ")


def test_a_diff_shows_its_markers(
    tmp_path: Path, open_page: Any, request: pytest.FixtureRequest
) -> None:
    path, _ = view_bundles([str(APPROVED), str(REJECTED)], tmp_path / "diff.html")
    page = open_page(path)
    page.screenshot(tmp_path / "diff.png", request)
    assert page.text("#verdict").startswith("7 changes: gate approve_refund approved → rejected")
    card = page.text('[data-gate="approve_refund"]')
    assert card.splitlines()[:3] == ["approve_refund", "rejected", "~ changed"]
    assert '/decision: "approved" → "rejected"' in card
    changes = page.texts("#changes ul.changes > li")
    assert "\u2212 removed tool call issue_refund#0 removed: " in "\n".join(changes)
    removed = page.text("#timeline")
    assert "Facts only the old run has" in removed
    assert "issue_refund" in removed.split("Facts only the old run has")[1]
    rows = page.texts("#timeline tr.mark-changed")
    assert rows and all(row.endswith("~ changed") for row in rows)


def test_a_changed_dag_node_is_marked_in_the_drawing(
    tmp_path: Path, open_page: Any, request: pytest.FixtureRequest
) -> None:
    old = record(tmp_path / "old")
    new = record(tmp_path / "new", limit="200")
    path, _ = view_bundles([str(old), str(new)], tmp_path / "diff.html")
    page = open_page(path)
    page.screenshot(tmp_path / "dag.png", request)
    assert (
        page.text('#dag g.node[data-node="approve"]') == "approve\ngate ~ changed\nno model calls"
    )
    assert page.text('#dag g.node[data-node="lookup"]') == "lookup\ntool\nno model calls"


def test_a_failed_replays_page_says_what_drifted_in_its_banner(
    tmp_path: Path, open_page: Any, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = record(tmp_path / "bundle", question="Classify: where is my refund?")
    monkeypatch.setenv("REFUNDS_QUESTION", "Categorize: where is my refund?")
    with Run("drifted", mode="replay", replay=bundle) as run, pytest.raises(PayloadDriftError):
        agent()["handle"]()
    path = failed_test_page(
        run,
        test_id="test_flow.py::test_refund",
        replayed=True,
        bundle_path=bundle,
        view_dir=tmp_path / "pages",
        drift=run.raised_drift,
    )
    page = open_page(path)
    page.screenshot(tmp_path / "drift.png", request)
    banner = page.text("#verdict")
    assert banner.startswith("The replay stopped at a drift:\nPayloadDriftError request drift")
    assert "node answer, 1st call (ordinal 0)" in banner
    assert (
        '/messages/0/content: "Classify: where is my refund?" → '
        '"Categorize: where is my refund?"' in banner
    )
    assert "fix: record the run again" in banner
    assert "3 not reached (the run stopped at the drift)" in banner
    removed = page.text("#timeline").split("Facts only the old run has")[1]
    assert "approve" in removed and "refund(order_id='A1')" in removed
    assert removed.count("not reached (the run stopped at the drift)") == 3
    assert removed.count("\u2260 drifted (the run stopped here)") == 1
    assert "\u2212 removed" not in page.text("body")


def test_a_prompt_with_markup_is_shown_as_text_and_never_runs(
    tmp_path: Path, open_page: Any, request: pytest.FixtureRequest, browser: Any
) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    bundle = record(tmp_path / "run", question=ATTACK + "<script>window.pwned = 1</script>")
    path, _ = view_bundles([str(bundle)], tmp_path / "run.html")
    page = open_page(path)
    page.screenshot(tmp_path / "attack.png", request)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 - raises when no alert is open
    assert browser.execute_script("return window.pwned") is None
    assert browser.execute_script("return document.querySelectorAll('img').length") == 0
    first_call = page.driver.find_element(page.by.CSS_SELECTOR, "#timeline tr.fact:nth-child(2)")
    first_call.click()  # the fact's detail, drawn on demand
    detail = page.text("#timeline tr.detail")
    assert "</script><script>alert(1)</script><!-- <img src=x onerror=alert(2)> &amp;" in detail
    assert browser.execute_script("return document.scripts.length") == 2


def test_a_thousand_facts_page_draws_and_filters(
    tmp_path: Path, open_page: Any, request: pytest.FixtureRequest
) -> None:
    path, _ = view_bundles([str(big_run(tmp_path / "big"))], tmp_path / "big.html")
    page = open_page(path)
    page.screenshot(tmp_path / "big.png", request)
    assert len(page.driver.find_elements(page.by.CSS_SELECTOR, "#timeline tr.fact")) == 1000
    assert len(page.driver.find_elements(page.by.CSS_SELECTOR, "#gates article.card")) == 250
    box = page.driver.find_element(page.by.CSS_SELECTOR, "#timeline input")
    box.send_keys("tool_call")
    assert page.text("#timeline .filter") == "250 of 1000 facts shown"


SCREENSHOT = Path(__file__).parents[2] / "example_project" / "viewer.png"
SHOWN = APPROVED.parent / "test_refund_over_the_limit_is_rejected_for_review"


def test_the_example_projects_screenshot_is_of_this_viewer(
    tmp_path: Path,
    open_page: Any,
    browser: Any,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Made by this test: ``LLMWB_UPDATE_SCREENSHOT=1 pytest -k screenshot tests/viewer``."""
    import os

    root = SCREENSHOT.parents[1]
    monkeypatch.chdir(root)  # the page names the bundle as a user at the root would
    path, _ = view_bundles([str(SHOWN.relative_to(root))], tmp_path / "rejected.html")
    browser.set_window_size(1100, 900)
    try:
        page = open_page(path)
        assert "rejected" in page.text('[data-gate="approve_refund"]')
        shot = page.screenshot(tmp_path / "viewer.png", request)
    finally:
        browser.set_window_size(1280, 1600)
    if os.environ.get("LLMWB_UPDATE_SCREENSHOT") == "1":
        SCREENSHOT.write_bytes(shot.read_bytes())
    data = SCREENSHOT.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) < 200_000
