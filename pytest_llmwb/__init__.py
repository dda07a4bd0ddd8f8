"""pytest-llmwb: record, replay and prove LLM agent runs."""
