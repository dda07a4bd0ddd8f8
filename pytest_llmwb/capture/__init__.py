"""Provider capture: real LLM SDK traffic recorded and replayed at the HTTP layer.

Inside an active :func:`capture` (the ``llmwb`` fixture starts one for every test),
requests made with httpx or httpx2 (the ``openai`` and ``anthropic`` SDKs), requests,
urllib3, http.client or aiohttp become typed facts: a **model_io** receipt when a
provider adapter reads the request, a **tool_call** otherwise. The wire exchange is
kept out of line in the bundle, by content hash, and replay serves it byte for byte,
streamed chunks included. In replay the network is blocked.

The pieces, each in its own module:

- :mod:`.session`: the decisions (let through, serve, record) and the facts;
- :mod:`.exchange`: the stored form of an exchange;
- :mod:`.httpx_transport`: httpx / httpx2 transports, streams passed through live;
- :mod:`.vcr_cassette`: vcrpy's patches for the other clients, answered by the run;
- :mod:`.network`: the network guard of replay.

Importing this package is cheap: the HTTP clients and vcrpy load when capture starts.
"""

from __future__ import annotations

from .session import CaptureConfig, CaptureSession, active_session, capture

__all__ = ["CaptureConfig", "CaptureSession", "active_session", "capture"]
