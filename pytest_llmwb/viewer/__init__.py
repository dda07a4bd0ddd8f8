"""A run you can look at: one self-contained HTML page per bundle, or per pair of bundles.

``llmwb view BUNDLE`` draws the run's DAG with tokens and cost per node, the timeline of
its facts, a card per gate decision (with the path of facts that led to it, as
``llmwb explain`` finds it), artifact revisions and costs. ``llmwb view OLD NEW`` draws
the new run marked with what the semantic diff (:mod:`pytest_llmwb.diff`) found. The
``--llmwb-view-dir`` option of the pytest plugin writes a page per failing test.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..diff.engine import RunLike
from .model import FORMAT, diff_model, layout, run_model
from .page import page_data, render_page, write_page

__all__ = [
    "FORMAT",
    "diff_model",
    "diff_page",
    "layout",
    "page_data",
    "render_page",
    "run_model",
    "run_page",
    "view_bundles",
    "write_page",
]


def run_page(run: RunLike, *, name: str, source: str) -> str:
    """The HTML page of one run (a loaded bundle, or a live :class:`~pytest_llmwb.Run`)."""
    return render_page(run_model(run, name=name, source=source), title=f"llmwb view: {name}")


def diff_page(
    old: RunLike,
    new: RunLike,
    *,
    names: tuple[str, str],
    sources: tuple[str, str],
    drift: Sequence[BaseException] = (),
    **options: Any,
) -> str:
    """The HTML page of ``new`` marked with its differences from ``old``.

    ``drift`` holds the drift errors that stopped ``new``, a failed replay of ``old``:
    the page shows them first, and what the run never got to as not reached
    (:func:`~pytest_llmwb.viewer.model.diff_model`). ``options`` go to
    :func:`pytest_llmwb.diff.diff_runs` (``ignore``, ``max_changes``, ...).
    """
    from ..diff.command import paused_gc
    from ..diff.engine import diff_runs

    options.setdefault("max_changes", None)
    with paused_gc():
        diff = diff_runs(old, new, **options)
    model = diff_model(old, new, diff, names=names, sources=sources, drift=drift)
    return render_page(model, title=f"llmwb view: {names[0]} → {names[1]}")


def view_bundles(
    paths: list[str], output: str | os.PathLike[str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write the page of one bundle, or of two compared; returns its path and a summary.

    Bundles are read (and checked) before anything is written, so a bundle that fails
    to load raises its :class:`~pytest_llmwb.BundleError` and leaves no page behind.
    The default output is ``<bundle directory name>.html`` in the current directory.
    """
    from ..store import load_bundle

    if len(paths) == 1:
        bundle = load_bundle(paths[0])
        page = run_page(bundle, name=bundle.name, source=paths[0])
        target = Path(output) if output else Path(f"{Path(paths[0]).resolve().name}.html")
        gates = len(bundle.gates())
        about = {
            "run": bundle.name,
            "facts": len(bundle.facts),
            "gates": gates,
            "nodes": len(bundle.dag.nodes),
        }
        return write_page(target, page), about
    old_path, new_path = (Path(p) for p in paths)
    from ..diff.command import _require, check_versions

    for path, name in ((old_path, paths[0]), (new_path, paths[1])):
        _require(path, name)
    check_versions(old_path, new_path, paths[0], paths[1])
    old, new = load_bundle(old_path), load_bundle(new_path)
    from ..diff.command import paused_gc
    from ..diff.engine import diff_runs

    with paused_gc():
        diff = diff_runs(old, new, max_changes=None)
    model = diff_model(old, new, diff, names=(old.name, new.name), sources=(paths[0], paths[1]))
    page = render_page(model, title=f"llmwb view: {paths[0]} → {paths[1]}")
    target = Path(output) if output else Path(f"{new_path.resolve().name}.diff.html")
    return write_page(target, page), {"summary": diff.summary, "verdict": diff.verdict}
