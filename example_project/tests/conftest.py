"""The scripted model API, fresh for every test.

With the default provider the agent's openai SDK talks to a scripted stand-in on
127.0.0.1. A fresh one per test gives ids (``chatcmpl-0001``, ...) that start from 1 in
every bundle, so that recording one test alone, or under pytest-xdist, writes the same
bundle as recording the whole suite.
"""

from collections.abc import Iterator

import pytest
from support_agent import llm


@pytest.fixture(autouse=True)
def scripted_model_api() -> Iterator[None]:
    if llm.PROVIDER != "scripted":
        yield  # the real OpenAI API, chosen with LLMWB_EXAMPLE_PROVIDER=openai
        return
    with llm.scripted_model_api():
        yield
