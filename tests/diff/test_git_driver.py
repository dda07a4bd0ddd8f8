"""Bundles in a real git repository: the textconv and external diff drivers, ``--rev``."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from snapshot.refunds import record

from pytest_llmwb.cli import main

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

ATTRIBUTES = (Path(__file__).parents[2] / ".gitattributes").read_text()
LLMWB = f"{shlex.quote(sys.executable)} -m pytest_llmwb.cli"
BUNDLES = "tests/llmwb_bundles/test_refunds"
PROMPT = "Answer in two short sentences."


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with four committed bundles; in the work tree one is re-recorded
    with a new prompt, one re-recorded unchanged, one deleted and one added."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitattributes").write_text(ATTRIBUTES)
    bundles = root / BUNDLES
    for name in ("changed", "rerecorded", "deleted"):
        record(bundles / name, name=name)
    record(bundles / "long", name="long", reply="word " * 4000)  # stored out of line
    git(root, "add", "-A")
    git(root, "commit", "-qm", "golden bundles")
    record(bundles / "changed", name="changed", prompt=PROMPT)
    record(bundles / "rerecorded", name="rerecorded")
    shutil.rmtree(bundles / "deleted")
    record(bundles / "added", name="added", amount="500")
    record(bundles / "long", name="long", reply="term " * 4000)
    monkeypatch.chdir(root)
    return root


def test_textconv_driver_shows_readable_lines_and_hides_volatile_values(repo: Path) -> None:
    git(repo, "config", "diff.llmwb.textconv", f"{LLMWB} textconv")
    out = git(repo, "diff", "--", BUNDLES)
    assert f"-  prompt: Answer in one sentence.\n+  prompt: {PROMPT}\n" in out
    assert f"-  request/system: Answer in one sentence.\n+  request/system: {PROMPT}\n" in out
    assert "-  response/usage/input_tokens: 8\n+  response/usage/input_tokens: 9\n" in out
    assert " model_io answer#0\n" in out  # the fact the changed lines belong to, as context
    assert "changed/volatile.json" not in out  # re-recorded: the wall times are not shown
    assert "rerecorded" not in out
    changed = out[out.index("changed/dag.json") : out.index("long/")]
    assert '"seq"' not in changed and "sha256:" not in changed.split("index")[-1]
    raw = git(repo, "-c", "diff.llmwb.textconv=", "diff", "--no-textconv", "--", BUNDLES)
    assert "rerecorded/volatile.json" in raw  # without the driver, the wall times show


def test_long_strings_and_blobs_read_as_one_line_each(repo: Path) -> None:
    git(repo, "config", "diff.llmwb.textconv", f"{LLMWB} textconv")
    (new_blob,) = (repo / BUNDLES / "long" / "blobs").iterdir()
    git(repo, "add", "--intent-to-add", "--", str(new_blob))  # so that git diff shows it
    out = git(repo, "diff", "HEAD", "--", f"{BUNDLES}/long")
    assert "\n-blob sha256:" in out and "\n+blob sha256:" in out and ", 20000 bytes" in out
    assert "\n-  response/content: <blob sha256:" in out
    assert "\n+  response/content: <blob sha256:" in out
    assert "word word" not in out and "term term" not in out
    out = git(repo, "-c", f"diff.llmwb.command={LLMWB} git-diff", "diff", "--", f"{BUNDLES}/long")
    assert "~ model call answer#0: response changed (content) [seq 2]" in out
    assert "(what it holds: see facts.jsonl) added" in out


def test_external_diff_driver_shows_the_semantic_diff(repo: Path) -> None:
    out = git(repo, "-c", f"diff.llmwb.command={LLMWB} git-diff", "diff", "--", BUNDLES)
    changed = f"{BUNDLES}/changed"
    assert f"llmwb diff a/{changed}/dag.json b/{changed}/dag.json\n" in out
    assert "1 change: node answer prompt changed\n" in out
    assert f"llmwb diff a/{changed}/facts.jsonl b/{changed}/facts.jsonl\n" in out
    assert (
        "  ~ model call answer#0: request changed (system); response changed (usage); "
        "cost changed (amount) [seq 2]\n"
        f'      /request/system: "Answer in one sentence." → "{PROMPT}"\n'
    ) in out
    assert f"llmwb diff a/{BUNDLES}/deleted/facts.jsonl b/{BUNDLES}/deleted/facts.jsonl\n" in out
    assert "facts.jsonl deleted" in out
    assert "volatile" not in out


def test_a_hand_edited_file_falls_back_to_changed_lines(repo: Path) -> None:
    facts = repo / BUNDLES / "rerecorded" / "facts.jsonl"
    facts.write_text(facts.read_text().replace('"kind":"tool_call"', '"kind":"tool_kall"', 1))
    out = git(repo, "-c", f"diff.llmwb.command={LLMWB} git-diff", "diff", "--", str(facts))
    assert "(no semantic diff: unknown fact kind 'tool_kall'" in out
    assert "-tool_call lookup#0\n+tool_kall lookup#0\n" in out


def llmwb(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_diff_one_bundle_against_a_revision(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = llmwb(capsys, "diff", "--rev", "HEAD", f"{BUNDLES}/changed")
    assert code == 1
    assert out.startswith("2 changes: node answer prompt changed; model call answer#0 request")
    assert llmwb(capsys, "diff", "--rev", "HEAD", f"{BUNDLES}/rerecorded") == (
        0,
        "no changes: DAG refunds, 5 facts\n",
        "",
    )
    code, out, _ = llmwb(capsys, "diff", "--rev", "HEAD", f"{BUNDLES}/added")
    assert (code, out) == (1, f"{BUNDLES}/added: bundle added (run added, 4 facts)\n")
    code, out, _ = llmwb(capsys, "diff", "--rev", "HEAD", f"{BUNDLES}/deleted")
    assert (code, out) == (1, f"{BUNDLES}/deleted@HEAD: bundle removed (run deleted, 5 facts)\n")


def test_diff_a_tree_of_bundles_reads_only_what_git_sees_changed(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = llmwb(capsys, "diff", "--rev", "HEAD", "tests")
    assert code == 1
    assert out.splitlines()[0] == (
        "llmwb diff: 4 of 5 bundle(s) differ (2 changed, 1 added, 1 removed); "
        "1 re-recorded or compared with no semantic change"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "new prompt")
    code, md, _ = llmwb(
        capsys, "diff", "--rev", "HEAD~1", "--rev", "HEAD", "--format", "markdown", "."
    )
    assert code == 1
    assert md.splitlines()[2] == (
        "**4 of 5 bundle(s) differ (2 changed, 1 added, 1 removed); 1 re-recorded or compared "
        "with no semantic change**"
    )
    assert f"<details><summary>`{BUNDLES}/changed`: 2 changes: node answer prompt changed" in md
    code, raw, _ = llmwb(
        capsys, "diff", "--rev", "HEAD~1", "--rev", "HEAD", "--format", "json", "."
    )
    assert {b["path"].rsplit("/", 1)[1]: b["status"] for b in json.loads(raw)["bundles"]} == {
        "added": "added",
        "changed": "changed",
        "deleted": "removed",
        "long": "changed",
        "rerecorded": "same",
    }
    assert llmwb(capsys, "diff", "--rev", "HEAD", ".")[0] == 0  # the work tree is committed


def test_revision_errors_exit_2(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = llmwb(capsys, "diff", "--rev", "no-such-branch", BUNDLES)
    assert code == 2
    assert "--rev no-such-branch: no such revision in the repository" in err
    assert "fetch-depth: 0" in err
    code, _, err = llmwb(capsys, "diff", "--rev", "HEAD", "nothing/here")
    assert code == 2 and "nothing at nothing/here, neither in HEAD nor in the work tree" in err
    code, _, err = llmwb(capsys, "diff", "--rev", "HEAD", BUNDLES, BUNDLES)
    assert code == 2 and "with --rev, give one PATH (got 2)" in err
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    code, _, err = llmwb(capsys, "diff", "--rev", "HEAD", ".")
    assert code == 2 and "cannot find the git repository" in err
