"""``llmwb view`` without a browser: the page's data, determinism, escaping, bad input."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from snapshot.refunds import record

from pytest_llmwb import BundleCorruptError, BundleNotFoundError, ViewerWriteError
from pytest_llmwb.cli import main
from pytest_llmwb.store import load_bundle
from pytest_llmwb.viewer import layout, page_data, run_model, view_bundles

from .conftest import big_run

EXAMPLE = Path(__file__).parents[2] / "example_project" / "tests" / "llmwb_bundles" / "test_refund"
APPROVED = EXAMPLE / "test_large_refund_is_approved_by_policy"
REJECTED = EXAMPLE / "test_refund_over_the_limit_is_rejected_for_review"
ATTACK = "</script><script>alert(1)</script><!-- <img src=x onerror=alert(2)> &amp; \u2028"


def embedded(page: str) -> dict:
    """The JSON the page carries, read as a browser would: up to the first </script>."""
    match = re.search(r'<script type="application/json" id="llmwb-data">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_view_writes_one_page_and_says_what_is_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.html"
    assert main(["view", str(APPROVED), "-o", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"wrote {out}: run example_project/tests/test_refund.py::"
        "test_large_refund_is_approved_by_policy, 11 facts, 2 gate decision(s), "
        "6 DAG node(s)\n"
    )
    page = out.read_text()
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page
    data = embedded(page)
    assert data["format"] == "llmwb-view/1"
    gate = next(g for g in data["gates"] if g["gate_id"] == "approve_refund")
    assert gate["decision"] == "approved"
    assert gate["reviewer"] == "policy refund-policy@2026-11"
    assert gate["policy"] == "refund-policy v2026-11"
    assert gate["reason"] == "249.00 is within the 500.00 auto-approval limit"
    # the same path of facts as llmwb explain
    assert gate["path_nodes"] == ["classify", "lookup_order", "approve_refund"]
    assert [c["seq"] for c in gate["causes"]] == [2, 4]
    nodes = {n["id"]: n for n in data["dag"]["nodes"]}
    assert nodes["classify"]["spend"]["cost"] == "0.000019 USD"
    assert nodes["draft_reply"]["spend"]["tokens"] == 60


def test_the_same_bundle_gives_the_same_page_byte_for_byte(tmp_path: Path) -> None:
    bundle = record(tmp_path / "run")
    first, _ = view_bundles([str(bundle)], tmp_path / "first.html")
    record(tmp_path / "run")  # recorded again: new wall times, the same behaviour
    second, _ = view_bundles([str(bundle)], tmp_path / "second.html")
    assert first.read_bytes() == second.read_bytes()


def test_bundle_text_cannot_close_the_data_element(tmp_path: Path) -> None:
    bundle = record(tmp_path / "run", question=ATTACK)
    path, _ = view_bundles([str(bundle)], tmp_path / "run.html")
    page = path.read_text()
    # the only script end tags are the page's own two
    assert page.count("</script>") == 2
    assert "alert(1)" not in page.split('id="llmwb-data">')[0]
    data = embedded(page)  # read up to the first </script>: still the whole, valid JSON
    asked = next(f for f in data["facts"] if f["kind"] == "model_io")
    assert ATTACK in json.dumps(asked["detail"], ensure_ascii=False)
    assert "<" not in page_data({"text": ATTACK}) and "&" not in page_data({"text": ATTACK})


def test_a_bundle_holding_a_template_slot_stays_text(tmp_path: Path) -> None:
    bundle = record(tmp_path / "run", question="{{script}} {{data}}")
    path, _ = view_bundles([str(bundle)], tmp_path / "run.html")
    page = path.read_text()
    assert page.count("</script>") == 2
    assert "{{script}} {{data}}" in json.dumps(embedded(page), ensure_ascii=False)


def test_two_bundles_give_the_diff_marked_on_the_new_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "diff.html"
    assert main(["view", str(APPROVED), str(REJECTED), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(
        f"wrote {out}: 7 changes: gate approve_refund approved → rejected;"
    )
    data = embedded(out.read_text())
    assert data["diff"]["verdict"] == "changed"
    gates = {(g["gate_id"], g["marker"]) for g in data["gates"]}
    assert ("approve_refund", "changed") in gates
    approve = next(g for g in data["gates"] if g["gate_id"] == "approve_refund")
    assert {"path": "/decision", "old": "approved", "new": "rejected"} in approve["changes"]
    removed = data["diff"]["removed_facts"]
    assert [(f["kind"], f["node"]) for f in removed] == [("tool_call", "issue_refund")]


def test_a_changed_dag_marks_its_nodes(tmp_path: Path) -> None:
    old = record(tmp_path / "old")
    new = record(tmp_path / "new", limit="200", lookups="2")
    path, _ = view_bundles([str(old), str(new)], tmp_path / "diff.html")
    data = embedded(path.read_text())
    markers = {n["id"]: n["marker"] for n in data["dag"]["nodes"]}
    assert markers == {"lookup": "", "answer": "", "approve": "changed", "refund": ""}
    assert [f["marker"] for f in data["facts"] if f["kind"] == "tool_call"][:2] == ["", "added"]


def test_the_default_page_name_is_the_bundle_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["view", str(APPROVED)]) == 0
    assert (tmp_path / "test_large_refund_is_approved_by_policy.html").is_file()
    assert main(["view", str(APPROVED), str(REJECTED)]) == 0
    assert (tmp_path / "test_refund_over_the_limit_is_rejected_for_review.diff.html").is_file()


def test_layers_follow_the_edges_and_do_not_depend_on_anything_else() -> None:
    place = layout(["d", "a", "b", "c"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])
    assert place == {"a": (0, 0), "b": (1, 0), "c": (1, 1), "d": (2, 0)}
    # a cycle does not hang the layout; its nodes go past the rest
    assert layout(["x", "y", "z"], [("x", "y"), ("y", "x")]) == {
        "z": (0, 0),
        "x": (1, 0),
        "y": (1, 1),
    }


def test_an_edge_that_skips_columns_gets_room_below_its_row() -> None:
    from pytest_llmwb import Dag, Run

    chain = Dag("chain").tool("a").tool("b").tool("c").chain("a", "b", "c")
    with Run("chain", dag=chain) as straight:
        pass
    with Run(
        "skip", dag=Dag("skip").tool("a").tool("b").tool("c").chain("a", "b", "c").edge("a", "c")
    ) as skipping:
        pass
    flat = run_model(straight, name="chain", source="-")["dag"]
    arced = run_model(skipping, name="skip", source="-")["dag"]
    # the arc a -> c passes below b: the drawing is one arc deeper, not wider
    assert arced["width"] == flat["width"]
    assert arced["height"] == flat["height"] + arced["arc"]


def test_a_thousand_facts_render_quickly(tmp_path: Path) -> None:
    bundle = big_run(tmp_path / "big")
    started = time.perf_counter()
    path, about = view_bundles([str(bundle)], tmp_path / "big.html")
    elapsed = time.perf_counter() - started
    assert about["facts"] == 1000
    assert elapsed < 20, elapsed
    data = embedded(path.read_text())
    assert len(data["facts"]) == 1000 and len(data["gates"]) == 250
    # gate cards list the facts nearest to them: the page grows with the run, not its square
    last = data["gates"][-1]
    assert last["causes_total"] == 999 and [c["seq"] for c in last["causes"]] == list(
        range(975, 1000)
    )
    assert path.stat().st_size < 2_500_000


# --- bad input ----------------------------------------------------------------------------


def test_a_missing_bundle_is_named_and_no_page_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.html"
    assert main(["view", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"llmwb: error: no bundle at {tmp_path / 'nothing'}")
    assert not out.exists()
    with pytest.raises(BundleNotFoundError):
        view_bundles([str(APPROVED), str(tmp_path / "nothing")], out)
    assert not out.exists()


def test_a_corrupt_bundle_leaves_the_old_page_as_it_was(tmp_path: Path) -> None:
    bundle = record(tmp_path / "run")
    out = tmp_path / "run.html"
    view_bundles([str(bundle)], out)
    before = out.read_bytes()
    facts = bundle / "facts.jsonl"
    facts.write_text(facts.read_text()[:-40] + "\n")
    with pytest.raises(BundleCorruptError):
        view_bundles([str(bundle)], out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.html"]


def test_output_into_a_missing_directory_says_how_to_fix_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "run.html"
    assert main(["view", str(APPROVED), "-o", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"llmwb: error: cannot write the viewer page {out}: the directory "
        f"{out.parent} does not exist\n"
        f"fix: create it first (mkdir -p {out.parent}) or write elsewhere with -o FILE\n"
    )


def test_output_through_a_file_or_onto_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ViewerWriteError, match=r"the directory .*file is a file"):
        view_bundles([str(APPROVED)], tmp_path / "file" / "run.html")
    with pytest.raises(ViewerWriteError, match="it is a directory") as caught:
        view_bundles([str(APPROVED)], tmp_path)
    assert caught.value.fix == f"name a file: -o {tmp_path / 'run.html'}"


def test_an_unwritable_place_is_named_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # /proc refuses new files even to root, unlike a chmod-ed directory
    with pytest.raises(ViewerWriteError, match=r"cannot write the viewer page /proc/run\.html: "):
        view_bundles([str(APPROVED)], "/proc/run.html")


def test_more_than_two_bundles_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", str(APPROVED), str(APPROVED), str(APPROVED)]) == 2
    assert "llmwb view takes one bundle or two (OLD NEW), got 3" in capsys.readouterr().err


def test_the_model_of_a_loaded_bundle_and_of_its_page_agree() -> None:
    bundle = load_bundle(APPROVED)
    model = run_model(bundle, name=bundle.name, source="x")
    assert json.loads(page_data(model))["facts"] == json.loads(json.dumps(model["facts"]))
