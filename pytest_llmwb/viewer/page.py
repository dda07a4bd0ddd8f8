"""One self-contained HTML page per run or pair of runs, written atomically.

The page is the template in ``assets/`` with its stylesheet, its script and the page
data inlined: no network, no CDN, it opens from ``file://``. Bundle content is
untrusted, so it reaches the page only as JSON inside ``<script
type="application/json">`` with every ``<``, ``>`` and ``&`` written as a JSON unicode
escape (no text in it can close the element), and the script draws it with
``textContent`` only. A Content-Security-Policy that allows nothing but the page's own
script (by its hash) and style backs that up.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from ..exceptions import ViewerWriteError
from .model import FORMAT

__all__ = ["page_data", "render_page", "write_page"]

_DATA_ESCAPES = (
    (b"<", b"\\u003c"),
    (b">", b"\\u003e"),
    (b"&", b"\\u0026"),
    # JSON allows these two raw in strings; older script parsers ended a line at them
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
)


_SLOT = re.compile(r"\{\{(csp|title|style|data|script)\}\}")


def _asset(name: str) -> str:
    assets = resources.files(__package__).joinpath("assets")
    return assets.joinpath(name).read_text(encoding="utf-8")


def page_data(model: dict[str, Any]) -> str:
    """``model`` as JSON that is safe inside a ``<script>`` element of an HTML page."""
    data = orjson.dumps({"format": FORMAT, **model})
    for raw, escaped in _DATA_ESCAPES:
        data = data.replace(raw, escaped)
    return data.decode()


def _csp_hash(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


def render_page(model: dict[str, Any], *, title: str) -> str:
    """The complete HTML page for ``model`` (see :mod:`pytest_llmwb.viewer.model`)."""
    script = _asset("viewer.js")
    style = _asset("viewer.css")
    policy = (
        "default-src 'none'; img-src data:; "
        f"style-src '{_csp_hash(style)}'; script-src '{_csp_hash(script)}'; "
        "base-uri 'none'; form-action 'none'"
    )
    parts = {
        "csp": html.escape(policy),
        "title": html.escape(title),
        "style": style,
        "data": page_data(model),
        "script": script,
    }
    # one pass: a bundle holding "{{script}}" must stay text, not pull in a second copy
    return _SLOT.sub(lambda match: parts[match.group(1)], _asset("viewer.html"))


def write_page(path: str | os.PathLike[str], page: str) -> Path:
    """Write ``page`` to ``path`` atomically: the file is whole, or as it was before.

    Raises :class:`~pytest_llmwb.ViewerWriteError` naming the path and the fix when the
    directory is missing, ``path`` is a directory, or the place is not writable.
    """
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise ViewerWriteError(
            f"cannot write the viewer page to {target}: it is a directory",
            fix=f"name a file: -o {target / 'run.html'}",
        )
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise ViewerWriteError(
            f"cannot write the viewer page {target}: the directory {folder} {what}",
            fix=f"create it first (mkdir -p {folder}) or write elsewhere with -o FILE",
        )
    from ..store import write_atomic

    try:
        write_atomic(target, page.encode("utf-8"))
    except OSError as exc:
        raise ViewerWriteError(
            f"cannot write the viewer page {target}: {exc.strerror or exc}",
            fix=f"make {folder} writable, or write elsewhere with -o FILE",
        ) from None
    return target
