"""Execute the documentation, so that it cannot rot.

Pages: every ``docs/*.md``, ``example_project/README.md`` and the ``## Quickstart``
section of ``README.md``. Each page runs in a fresh temporary directory (the current
directory while it runs), its fenced blocks in order:

- A block of any language whose first line is ``# file: NAME`` is written to ``NAME``
  (parent directories are created; the marker line stays in the file, where it is a
  comment in Python, TOML, INI and ``.gitattributes``). It is not executed.
- ``python``: executed, as ``__main__``. The ``python`` and ``pycon`` blocks of a page
  share one namespace.
- ``pycon``: run as a doctest (``ELLIPSIS``, ``NORMALIZE_WHITESPACE``) in that
  namespace. An expected exception is written as a traceback, whose message is compared.
- ``console``: each ``$ COMMAND`` line is run. The lines after it, up to the next
  ``$`` line, are expected output: each must match a whole line of the command's
  output (stdout and stderr), in order, with other lines allowed in between; ``...``
  in an expected line matches any text. The command must exit 0, or non-zero when the
  line ends with ``# fails``. ``pytest`` runs in this process
  (``pytester.runpytest_inprocess``, 80 columns, the hypothesis plugin disabled for
  speed), ``llmwb`` runs the CLI in this process, anything else runs in ``bash``.
- Any other language (``text``, ``bash``, ``toml``, ``ini``, ``json``, ...) is shown,
  not executed.

Pages listed in ``PROJECT_PAGES`` start in a copy of the project as a user would
check it out: ``pyproject.toml`` and ``example_project/``. A page must leave no run
active.

The tests at the end check that every public name, exception, option, ini key, marker
argument, hook and CLI command has its place in the docs, and every page its place in
the mkdocs nav.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.md")), ROOT / "example_project" / "README.md"]
GENAI_PAGES = {"pricing.md", "cli.md"}
PROJECT_PAGES = {"docs/cli.md", "docs/golden.md", "docs/viewer.md", "example_project/README.md"}

FENCE = re.compile(r"^```([\w+-]*)\s*$")
FILE_MARKER = re.compile(r"^#\s*file:\s*(\S+)\s*$")
FAILS = re.compile(r"\s+#\s*fails\s*$")


@dataclass
class Block:
    lang: str
    text: str
    line: int  # 1-based line of the opening fence


def parse_blocks(markdown: str) -> list[Block]:
    """The top-level fenced code blocks of a Markdown page, in order."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"unclosed code block opened on line {start + 1}")
        blocks.append(Block(match.group(1), "\n".join(body) + "\n", start + 1))
        i += 1
    return blocks


def as_pattern(expected: str) -> str:
    """An fnmatch pattern for an expected output line: ``...`` matches anything."""
    escaped = re.sub(r"([*?\[])", r"[\1]", expected.rstrip())
    return escaped.replace("...", "*")


class PageRunner:
    """Runs the blocks of one page in a pytester directory."""

    def __init__(self, name: str, pytester: pytest.Pytester) -> None:
        self.name = name
        self.pytester = pytester
        self.root = pytester.path
        self.namespace: dict[str, object] = {"__name__": "__main__"}

    # -- modules -------------------------------------------------------------------------

    def _forget_modules(self, names: set[str]) -> None:
        for module in list(sys.modules):
            if module.partition(".")[0] in names:
                del sys.modules[module]
        importlib.invalidate_caches()

    def _forget_foreign_modules(self) -> None:
        """Unload modules named like a file of this directory but loaded from elsewhere."""
        local = {
            p.stem if p.name != "__init__.py" else p.parent.name
            for p in self.root.rglob("*.py")
            if not any(
                part.startswith((".", "basetemp")) for part in p.relative_to(self.root).parts
            )
        }
        stale = set()
        for module_name, module in list(sys.modules.items()):
            top = module_name.partition(".")[0]
            path = getattr(module, "__file__", None)
            if top in local and path and not Path(path).resolve().is_relative_to(self.root):
                stale.add(top)
        self._forget_modules(stale)

    # -- blocks --------------------------------------------------------------------------

    def run(self, blocks: list[Block]) -> None:
        for block in blocks:
            where = f"{self.name}:{block.line}"
            first = block.text.split("\n", 1)[0]
            marker = FILE_MARKER.match(first)
            if marker:
                self.write(marker.group(1), block.text)
            elif block.lang == "python":
                self._forget_foreign_modules()
                code = compile(block.text, where, "exec")
                exec(code, self.namespace)
            elif block.lang == "pycon":
                self._forget_foreign_modules()
                self.doctest(block.text, where, block.line)
            elif block.lang == "console":
                self.console(block.text, where)

    def write(self, name: str, text: str) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.suffix == ".py":
            self._forget_modules({path.stem if path.name != "__init__.py" else path.parent.name})

    def doctest(self, text: str, where: str, line: int) -> None:
        parser = doctest.DocTestParser()
        test = parser.get_doctest(text, self.namespace, where, self.name, line)
        test.globs = self.namespace  # DocTest copies its globals; share them instead
        out = io.StringIO()
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
        )
        runner.run(test, out=out.write, clear_globs=False)
        if runner.failures:
            pytest.fail(f"pycon block at {where} failed:\n{out.getvalue()}", pytrace=False)

    def console(self, text: str, where: str) -> None:
        steps: list[tuple[str, list[str]]] = []
        for line in text.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            elif steps:
                steps[-1][1].append(line)
            elif line.strip():
                raise AssertionError(f"{where}: console block must start with a `$ ` line")
        for command, expected in steps:
            fails = bool(FAILS.search(command))
            command = FAILS.sub("", command)
            code, output = self.execute(command)
            context = f"{where}: $ {command}\n(exit code {code})\n" + "\n".join(output)
            if fails:
                assert code != 0, f"expected a failure\n{context}"
            else:
                assert code == 0, f"expected success\n{context}"
            patterns = [as_pattern(line) for line in expected if line.strip()]
            if patterns:
                matcher = pytest.LineMatcher([line.rstrip() for line in output])
                try:
                    matcher.fnmatch_lines(patterns)
                except pytest.fail.Exception:
                    pytest.fail(f"unexpected output\n{context}", pytrace=False)

    def execute(self, command: str) -> tuple[int, list[str]]:
        words = shlex.split(command, comments=True)
        if words and words[0] == "pytest":
            self._forget_foreign_modules()
            result = self.pytester.runpytest_inprocess(*words[1:])
            return int(result.ret), result.outlines + result.errlines
        if words and words[0] == "llmwb":
            from pytest_llmwb.cli import main

            stream = io.StringIO()
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                try:
                    code = main(words[1:])
                except SystemExit as exc:  # --help, --version, usage errors
                    code = exc.code if isinstance(exc.code, int) else 2
            return code, stream.getvalue().splitlines()
        env = dict(
            os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        )
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return proc.returncode, (proc.stdout + proc.stderr).splitlines()


def run_page(name: str, markdown: str, pytester: pytest.Pytester) -> None:
    from pytest_llmwb import current_run

    if name in PROJECT_PAGES:
        shutil.copy(ROOT / "pyproject.toml", pytester.path / "pyproject.toml")
        shutil.copytree(
            ROOT / "example_project",
            pytester.path / "example_project",
            ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"),
        )
    PageRunner(name, pytester).run(parse_blocks(markdown))
    assert current_run() is None, f"{name} leaves a run active"


def preload_package() -> None:
    """Import every module of pytest_llmwb once, before any pytester snapshot of sys.modules.

    pytester unloads the modules an in-process run imported once the run is over, so
    each run would import the implementation and its dependencies (pydantic models,
    vcrpy, ...) again: slow, and a source of two classes of one name.
    """
    import pkgutil

    import pytest_llmwb

    for info in pkgutil.walk_packages(pytest_llmwb.__path__, "pytest_llmwb."):
        importlib.import_module(info.name)


preload_package()


@pytest.fixture
def docs_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    pytester.syspathinsert()
    # edited modules must be read afresh, never from a stale .pyc of the same size
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    for name in ("LLMWB_EXAMPLE_PROVIDER", "LLMWB_EXAMPLE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    # the page's own pytest runs are no xdist workers, even when this test runs in one
    # (syrupy, seeing the variable, would keep its report for a controller that is not there)
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    # hypothesis's plugin costs over a second per in-process run and plays no part here
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    monkeypatch.setenv("COLUMNS", "80")
    return pytester


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page(page: Path, docs_env: pytest.Pytester) -> None:
    if page.name in GENAI_PAGES and importlib.util.find_spec("genai_prices") is None:
        pytest.skip("this page prices calls with genai-prices (Python >= 3.11 only)")
    name = str(page.relative_to(ROOT))
    run_page(name, page.read_text(), docs_env)


def test_readme_quickstart(docs_env: pytest.Pytester) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Quickstart\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Quickstart' section"
    blocks = parse_blocks(match.group(1))
    assert any(b.lang == "python" for b in blocks)
    run_page("README.md#quickstart", match.group(1), docs_env)


# --- every public name has its place in the docs -------------------------------------------


def _docs_text() -> str:
    # any page may document a feature; errors.md, plugin.md and cli.md are the usual places
    return "\n".join(p.read_text() for p in sorted(DOCS.glob("*.md")))


def test_every_page_is_in_the_nav() -> None:
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    assert listed == {p.name for p in DOCS.glob("*.md")}


def test_every_public_name_is_documented() -> None:
    import pytest_llmwb

    text = _docs_text()
    names = [name for name in pytest_llmwb.__all__ if not name.startswith("_")]
    missing = [name for name in names if not re.search(rf"\b{name}\b", text)]
    assert missing == [], "not mentioned in docs/"


def test_every_exception_has_its_section() -> None:
    from pytest_llmwb import exceptions

    text = _docs_text()
    missing = [name for name in exceptions.__all__ if not re.search(f"^#+ {name}$", text, re.M)]
    assert missing == [], "no heading in docs/"


def test_every_option_ini_key_marker_argument_and_hook_is_documented(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_llmwb import hookspecs

    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest")
    text = _docs_text()
    help_text = pytester.runpytest_inprocess("--help").stdout.str()
    options = set(re.findall(r"^\s+(--llmwb-[a-z-]+)", help_text, re.M))
    ini_keys = set(re.findall(r"^\s+(llmwb_\w+) \(", help_text, re.M))
    markers = pytester.runpytest_inprocess("--markers").stdout.str()
    signature = re.search(r"@pytest\.mark\.llmwb\((.*?)\):", markers)
    assert options and ini_keys and signature
    arguments = set(re.findall(r"(\w+)=", signature.group(1)))
    hooks = {name for name in dir(hookspecs) if name.startswith("pytest_llmwb_")}
    names = options | ini_keys | hooks
    assert sorted(n for n in names if f"`{n}" not in text) == []
    assert sorted(a for a in arguments if f"| `{a}` |" not in text) == []


def test_every_cli_command_has_its_section() -> None:
    from pytest_llmwb.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    text = _docs_text()
    assert sorted(c for c in commands if f"## llmwb {c}\n" not in text) == []


@pytest.fixture
def as_xdist_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment pytest-xdist gives a worker (set before ``pytester`` starts)."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "0123456789abcdef")


def test_inner_sessions_are_no_xdist_workers(
    as_xdist_worker: None, docs_env: pytest.Pytester
) -> None:
    # the pages' pytest sessions run in this process: under `pytest -n 2` they must not
    # take themselves for xdist workers (syrupy would then report no snapshot)
    docs_env.makepyfile(
        """
        import os

        def test_env():
            assert [n for n in os.environ if n.startswith("PYTEST_XDIST_")] == []
        """
    )
    docs_env.runpytest_inprocess().assert_outcomes(passed=1)
