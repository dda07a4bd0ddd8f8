"""`llmwb reprice`, and prices in the pytest plugin (ini key, environment, replay)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pytest_llmwb import Cost, ModelResponse, Run, Usage, load_bundle
from pytest_llmwb.cli import main
from pytest_llmwb.pricing import load_price_file

# genai-prices (the default price table) is installed on Python >= 3.11 only
needs_genai = pytest.mark.skipif(
    importlib.util.find_spec("genai_prices") is None, reason="genai-prices is not installed"
)

V1 = """
version = "v1"
[models."gpt-4o"]
input = "1"
output = "2"
"""
V2 = V1.replace('"v1"', '"v2"').replace('input = "1"', 'input = "3"')


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """Two priced gpt-4o calls, one call of a model no table knows, one failed call."""
    prices = tmp_path / "v1.toml"
    prices.write_text(V1)
    with Run("r", prices=load_price_file(prices)) as run:
        for n in (1, 2):
            run.model_io(
                {"model": "gpt-4o", "messages": [{"role": "user", "content": str(n)}]},
                lambda r: ModelResponse(usage=Usage(input_tokens=1_000_000, output_tokens=500_000)),
                node="chat",
                provider="openai",
            )
        run.model_io(
            {"model": "house-model"},
            lambda r: ModelResponse(usage=Usage(input_tokens=10)),
            node="house",
            provider="acme",
            cost=lambda req, resp: Cost(amount="0.5", source="mine"),
        )
        with pytest.raises(RuntimeError):
            run.model_io(
                {"model": "gpt-4o"},
                lambda r: (_ for _ in ()).throw(RuntimeError("down")),
                node="chat",
                provider="openai",
            )
    path = tmp_path / "bundle"
    run.save(path)
    (tmp_path / "v2.toml").write_text(V2)
    return path


@needs_genai
def test_dry_run_prints_old_and_new_and_writes_nothing(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(bundle)
    v2 = bundle.parent / "v2.toml"
    assert main(["reprice", str(bundle), "--price-file", str(v2), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"reprice {bundle} with v2.toml vv2 > genai-prices" in out
    assert "openai/gpt-4o: 2 USD (v1.toml vv1) -> 4 USD (v2.toml vv2)" in out
    assert "acme/house-model: 0.5 USD (mine) (kept: not in the price table)" in out
    assert "total  4.5 USD -> 8.5 USD" in out
    assert "dry run, not written (2 receipt(s) would change)" in out
    assert tree(bundle) == before


def test_reprice_rewrites_costs_and_the_manifest(
    bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = load_bundle(bundle)
    volatile = (bundle / "volatile.json").read_bytes()
    v2 = bundle.parent / "v2.toml"
    assert main(["reprice", str(bundle), "--price-file", str(v2)]) == 0
    assert "rewritten (2 receipt(s) repriced)" in capsys.readouterr().out
    new = load_bundle(bundle)  # the manifest's digests match the new facts
    assert new.manifest.facts_digest != old.manifest.facts_digest
    costs = [f.cost.amount if f.cost else None for f in new.model_io()]
    assert costs == ["4", "4", "0.5", None]
    assert [f.cost.source for f in new.model_io()[:2]] == ["v2.toml vv2"] * 2  # type: ignore[union-attr]
    # nothing else changed
    strip = [f.model_copy(update={"cost": None}) for f in new.facts]
    assert strip == [f.model_copy(update={"cost": None}) for f in old.facts]
    assert (bundle / "volatile.json").read_bytes() == volatile
    # a second run has nothing to do
    assert main(["reprice", str(bundle), "--price-file", str(v2)]) == 0
    assert "no cost changed, not written" in capsys.readouterr().out


def test_reprice_uses_the_price_file_of_the_environment(
    bundle: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLMWB_PRICE_FILE", str(bundle.parent / "v2.toml"))
    assert main(["reprice", str(bundle), "--dry-run"]) == 0
    assert "-> 4 USD (v2.toml vv2)" in capsys.readouterr().out


def test_reprice_errors(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reprice", str(tmp_path / "none")]) == 2
    assert "no bundle at" in capsys.readouterr().err
    assert main(["reprice", str(bundle), "--price-file", str(tmp_path / "x.toml")]) == 2
    assert "cannot read price file" in capsys.readouterr().err


# --- the plugin ------------------------------------------------------------------------------

AGENT_TEST = """
from pytest_llmwb import ModelResponse, Usage, model


@model(provider="openai")
def chat(request):
    return ModelResponse(model="gpt-4o", usage=Usage(input_tokens=1_000_000, output_tokens=0))


def test_chat(llmwb):
    chat({"model": "gpt-4o"})
    assert llmwb.model_calls[0].cost.amount == EXPECTED
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    monkeypatch.delenv("LLMWB_PRICE_FILE", raising=False)
    (pytester.path / "prices").mkdir()
    (pytester.path / "prices" / "v1.toml").write_text(V1)
    (pytester.path / "prices" / "v2.toml").write_text(V2)
    pytester.makeini("[pytest]\nllmwb_price_file = prices/v1.toml\n")
    return pytester


def test_the_ini_price_file_prices_recorded_calls(project: pytest.Pytester) -> None:
    project.makepyfile(test_chat=AGENT_TEST.replace("EXPECTED", '"1"'))
    project.runpytest("--llmwb-record").assert_outcomes(passed=1)
    facts = (project.path / "llmwb_bundles/test_chat/test_chat/facts.jsonl").read_text()
    assert '"source":"v1.toml vv1"' in facts


def test_the_environment_wins_over_the_ini_key(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMWB_PRICE_FILE", str(project.path / "prices" / "v2.toml"))
    project.makepyfile(test_chat=AGENT_TEST.replace("EXPECTED", '"3"'))
    project.runpytest("--llmwb-record").assert_outcomes(passed=1)


def test_replay_keeps_the_recorded_cost_whatever_the_price_file(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(test_chat=AGENT_TEST.replace("EXPECTED", '"1"'))
    project.runpytest("--llmwb-record").assert_outcomes(passed=1)
    project.makeini("[pytest]\nllmwb_price_file = prices/v2.toml\n")
    project.runpytest().assert_outcomes(passed=1)  # still "1": served, not priced again


def test_a_broken_price_file_fails_the_recording_test_with_its_name(
    project: pytest.Pytester,
) -> None:
    (project.path / "prices" / "v1.toml").write_text('version = "1"\n[models.m]\ninput = "x"\n')
    project.makepyfile(test_chat=AGENT_TEST.replace("EXPECTED", '"1"'))
    result = project.runpytest("--llmwb-record")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*PriceFileError: price file *v1.toml: models.'m'*"])


def test_repricing_a_sealed_bundle_says_its_seal_is_gone(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_llmwb.evidence.keys import generate_key
    from pytest_llmwb.evidence.seal import seal_bundle

    seal_bundle(bundle, generate_key(tmp_path / "key"))
    v2 = bundle.parent / "v2.toml"
    assert main(["reprice", str(bundle), "--price-file", str(v2), "--dry-run"]) == 0
    assert "seal" not in capsys.readouterr().err  # a dry run changes nothing
    assert main(["reprice", str(bundle), "--price-file", str(v2)]) == 0
    assert not (bundle / "seal").exists()
    assert capsys.readouterr().err == (
        f"llmwb: note: the seal of {bundle} was removed with the old costs: the bundle "
        f"changed; seal it again with: llmwb seal {bundle} --key KEY\n"
    )
