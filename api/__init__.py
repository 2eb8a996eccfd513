"""The HTTP API: management (``/api/v1``), health, and (later) the OpenAI-compatible data plane."""
