"""``llmwb diff``: one golden output per kind of change, formats, exit codes, bad input.

Expected outputs live in ``tests/diff/golden/``; after an intended change of the
renderers, rewrite them with ``LLMWB_UPDATE_GOLDEN=1 pytest tests/diff/test_cli.py``
and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snapshot.refunds import record

from pytest_llmwb.cli import main
from pytest_llmwb.codec import dumps_record
from pytest_llmwb.schema import SCHEMA_VERSION
from pytest_llmwb.store import write_bundle

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("LLMWB_UPDATE_GOLDEN") == "1"

#: One change of each kind a reviewer meets, as knobs of the refunds agent.
KINDS = {
    "dag": {"limit": "200"},
    "prompt": {"prompt": "Answer in two sentences, and thank the customer."},
    "request": {"question": "Where is my refund for A1?"},
    "response": {"reply": "We refunded your order today."},
    "gate_path": {"amount": "500"},
    "artifact": {"signature": "Ana, support"},
    "cost": {"rate": "0.000002"},
    "extra_call": {"lookups": "2"},
}


def assert_golden(name: str, output: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(output)
    assert path.exists(), f"no golden output {path}: run with LLMWB_UPDATE_GOLDEN=1"
    assert output == path.read_text()


def llmwb(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def old(tmp_path: Path) -> Path:
    return record(tmp_path / "old")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_change_has_its_golden_output(
    kind: str, old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = record(tmp_path / "new", **KINDS[kind])
    code, out, err = llmwb(capsys, "diff", old, new)
    assert (code, err) == (1, "")
    assert_golden(f"{kind}.txt", out)


def test_the_same_run_recorded_again_is_no_change(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    again = record(tmp_path / "again")
    assert (again / "volatile.json").read_bytes() != (old / "volatile.json").read_bytes()
    code, out, _ = llmwb(capsys, "diff", old, again)
    assert code == 0
    assert out == "no changes: DAG refunds, 5 facts\n"


@pytest.mark.parametrize("fmt", ["markdown", "json"])
def test_markdown_and_json(
    fmt: str, old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = record(tmp_path / "new", amount="500", reply="A colleague will look at your refund.")
    code, out, _ = llmwb(capsys, "diff", "--format", fmt, old, new)
    assert code == 1
    if fmt == "json":
        data = json.loads(out)
        assert data.pop("path") == str(new)
        assert data["verdict"] == "changed" and data["stats"]["removed"] == 1
        out = json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert_golden(f"gate_path_and_response.{'md' if fmt == 'markdown' else 'json'}", out)


def test_color(old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = record(tmp_path / "new", amount="500")
    assert "\x1b[" in llmwb(capsys, "diff", "--color", "always", old, new)[1]
    assert "\x1b[" not in llmwb(capsys, "diff", "--color", "never", old, new)[1]
    assert "\x1b[" not in llmwb(capsys, "diff", old, new)[1]  # auto: not a terminal


def test_ignore_and_max_changes(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = record(tmp_path / "new", amount="500")
    code, out, _ = llmwb(capsys, "diff", "--max-changes", "1", old, new)
    assert code == 1
    assert out.splitlines()[0].startswith("3 changes: gate approve approved → rejected")
    assert "2 more changes not shown" in out
    cost = record(tmp_path / "cost", rate="0.000002")
    assert llmwb(capsys, "diff", "--ignore", "/cost/amount", old, cost)[0] == 0


def test_unrelated_runs_are_named_not_diffed(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_llmwb import Dag, Run

    other = tmp_path / "other"
    with Run("billing", dag=Dag("billing").tool("invoice")) as run:
        for n in range(6):
            run.tool_call("invoice", {"n": n}, lambda: {"ok": True}, node="invoice")
    run.save(other)
    code, out, _ = llmwb(capsys, "diff", old, other)
    assert code == 1
    assert out == (
        "unrelated runs: DAG refunds vs billing, 0% of facts align (5 vs 6 facts); not compared\n"
        "tokens 14 → 0 (-14), cost 0.000014 → 0 USD (-0.000014)\n"
    )


def _set_schema_version(bundle: Path, version: object) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["schema_version"] = version
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def test_a_newer_schema_version_is_refused_with_the_reason(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = record(tmp_path / "new")
    _set_schema_version(new, SCHEMA_VERSION + 1)
    code, out, err = llmwb(capsys, "diff", old, new)
    assert (code, out) == (2, "")
    assert err == (
        f"llmwb: error: cannot compare bundles of two schema versions: {old} has "
        f"schema_version {SCHEMA_VERSION}, {new} has {SCHEMA_VERSION + 1}. {new} was written "
        f"by a newer pytest-llmwb; this one (0.1.0) reads schema_version {SCHEMA_VERSION} and "
        "cannot read it\n"
        "fix: upgrade, then compare again: pip install -U pytest-llmwb\n"
    )


def test_a_version_1_bundle_says_how_to_upgrade_it(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = record(tmp_path / "new")
    _set_schema_version(old, 1)
    code, _, err = llmwb(capsys, "diff", old, new)
    assert code == 2
    assert f"llmwb rehash {old}" in err


def test_an_unknown_older_schema_version_says_there_is_no_migration(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = record(tmp_path / "new")
    _set_schema_version(old, 0)
    code, _, err = llmwb(capsys, "diff", old, new)
    assert code == 2
    assert "there is no migration from 0" in err
    assert f"fix: record the run of {old} again" in err


def test_a_golden_bundle_edited_by_hand_is_an_error_naming_the_file(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = record(tmp_path / "new")
    facts = new / "facts.jsonl"
    facts.write_text(facts.read_text().replace("on its way", "on the way"))
    code, _, err = llmwb(capsys, "diff", old, new)
    assert code == 2
    assert "facts.jsonl does not match the digest in manifest.json" in err
    assert f"llmwb rehash {new}" in err
    assert llmwb(capsys, "rehash", new)[0] == 0
    code, out, _ = llmwb(capsys, "diff", old, new)
    assert code == 1 and "on its way" in out and "on the way" in out

    lines = facts.read_text().splitlines()
    lines[1] = lines[1][:-1]  # break the JSON of line 2
    facts.write_text("\n".join(lines) + "\n")
    code, _, err = llmwb(capsys, "diff", old, new)
    assert code == 2
    assert f"in {facts}:2" in err


def test_usage_errors_exit_2(old: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = llmwb(capsys, "diff", old)
    assert code == 2 and "give two paths to compare (got 1)" in err
    code, _, err = llmwb(capsys, "diff", old, old.parent / "missing")
    assert code == 2 and "no bundle at" in err and "no such directory" in err
    code, _, err = llmwb(capsys, "diff", "--max-changes", "-1", old, old)
    assert code == 2 and "--max-changes -1" in err


def _big_bundle(path: Path, facts: int, variant: str) -> Path:
    """A bundle of ``facts`` tool calls, written without recording them one by one."""
    from pytest_llmwb.dag import Dag
    from pytest_llmwb.schema import ToolCallFact

    made = [
        ToolCallFact(
            seq=n + 1,
            node="lookup",
            ordinal=n,
            tool="lookup",
            arguments={"n": n},
            request_digest=f"sha256:{n:064x}",
            result={"v": variant if n % 2 else "same"},
        )
        for n in range(facts)
    ]
    write_bundle(path, name="big", dag=Dag("big").tool("lookup").freeze(), facts=made)
    return path


def test_a_huge_diff_is_bounded_and_says_what_was_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _big_bundle(tmp_path / "old", 6000, "a")
    new = _big_bundle(tmp_path / "new", 6000, "b")
    code, out, _ = llmwb(capsys, "diff", old, new)
    assert code == 1
    assert out.splitlines()[0].startswith("3000 changes: tool call lookup#1 result changed")
    assert "2950 more changes not shown (raise max_changes)" in out
    assert len(out.splitlines()) < 120
    assert len(out) < 10_000


def test_two_trees_of_bundles(
    old: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for tree in (a, b):
        shutil.copytree(old, tree / "mod" / "same")
    shutil.copytree(old, a / "mod" / "changed")
    record(b / "mod" / "changed", reply="Refunded.")
    shutil.copytree(old, a / "mod" / "removed")
    shutil.copytree(old, b / "mod" / "added")
    code, out, _ = llmwb(capsys, "diff", a, b)
    assert code == 1
    assert out.splitlines()[0] == (
        "llmwb diff: 3 of 4 bundle(s) differ (1 changed, 1 added, 1 removed); "
        "1 re-recorded or compared with no semantic change"
    )
    assert "=== mod/changed: changed" in out
    assert "=== mod/added: added (run refunds, 5 facts)" in out
    code, md, _ = llmwb(capsys, "diff", "--format", "markdown", a, b)
    assert "<details><summary>`mod/changed`: 2 changes: artifact reply content changed" in md
    assert "- `mod/removed`: removed (run refunds, 5 facts)" in md
    code, raw, _ = llmwb(capsys, "diff", "--format", "json", a, b)
    assert {e["path"]: e["status"] for e in json.loads(raw)["bundles"]} == {
        "mod/added": "added",
        "mod/changed": "changed",
        "mod/removed": "removed",
        "mod/same": "same",
    }
    assert llmwb(capsys, "diff", a, a)[0] == 0


def test_the_console_script_exit_codes(old: Path, tmp_path: Path) -> None:
    new = record(tmp_path / "new", reply="Refunded.")
    cli = [sys.executable, "-m", "pytest_llmwb.cli", "diff"]
    assert subprocess.run([*cli, old, old], capture_output=True).returncode == 0
    assert subprocess.run([*cli, old, new], capture_output=True).returncode == 1
    assert subprocess.run([*cli, old, tmp_path], capture_output=True).returncode == 2


def test_textconv_reads_each_bundle_file(old: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert llmwb(capsys, "textconv", old / "volatile.json")[1] == (
        "volatile values (wall times, durations, trace and span ids): not compared\n"
    )
    code, facts, _ = llmwb(capsys, "textconv", old / "facts.jsonl")
    assert code == 0
    assert facts.splitlines()[:3] == [
        "tool_call lookup#0",
        "  arguments/order_id: A1",
        "  result/amount: 40",
    ]
    assert "gate approve (approve#0)" in facts and "seq" not in facts
    dag = llmwb(capsys, "textconv", old / "dag.json")[1]
    assert dag.splitlines()[:3] == [
        "DAG refunds (declared)",
        "node lookup (tool)",
        "node answer (model)",
    ]
    manifest = llmwb(capsys, "textconv", old / "manifest.json")[1]
    assert manifest.splitlines()[0] == "run refunds"
    broken = old / "facts.jsonl"
    broken.write_bytes(broken.read_bytes() + dumps_record({"kind": "step"})[:-1] + b"\n")
    assert "not JSON" in llmwb(capsys, "textconv", broken)[1]
