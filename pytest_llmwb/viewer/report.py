"""Viewer pages of failed tests (``--llmwb-view-dir``), so a CI failure is one click away.

A replayed test's page compares its bundle as recorded with the run as replayed — for a
drift failure, the drift error itself (what changed, where, old → new, the fix) and
the picture of the run up to where it stopped; a recorded (live) test's page shows the run
the failed test left, which was not written as its bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import diff_page, run_page, write_page

__all__ = ["failed_test_page"]


def failed_test_page(
    run: Any,
    *,
    test_id: str,
    replayed: bool,
    bundle_path: Path,
    view_dir: Path,
    drift: Sequence[BaseException] = (),
) -> Path:
    """Write the page of the failed test ``test_id`` into ``view_dir``; returns its path.

    :param replayed: the run was served from the bundle at ``bundle_path`` (replay or
        verify), so the page is the diff of that bundle against the run.
    :param drift: the drift errors the replay raised (the test's failure among them):
        the page's banner shows each, and the recorded facts the run never got to are
        marked not reached rather than removed.
    """
    from ..store import load_bundle, safe_dirname

    target = view_dir / f"{safe_dirname(test_id)}.html"
    if replayed and (bundle_path / "manifest.json").is_file():
        page = diff_page(
            load_bundle(bundle_path),
            run,
            names=(f"{test_id} (recorded)", f"{test_id} (replayed)"),
            sources=(str(bundle_path), "replayed by the failed test"),
            drift=drift,
        )
    else:
        page = run_page(
            run,
            name=test_id,
            source="recorded live by the failed test (not written as its bundle)",
        )
    try:
        view_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ..exceptions import ViewerWriteError

        raise ViewerWriteError(
            f"cannot make the viewer page directory {view_dir}: {exc.strerror or exc}",
            fix="point --llmwb-view-dir (or the llmwb_view_dir ini key) at a writable directory",
        ) from None
    return write_page(target, page)
