"""The OpenAI-compatible data plane (``/v1/*`` and ``/{org}/{env}/v1/*``).

It is a plain ASGI application in front of the FastAPI app, so the hot path pays for no routing
table, dependency graph or middleware stack it does not need. One module per concern:

- ``protocol``  typed OpenAI request models and the OpenAI error shape
- ``auth``      API-key cache with cross-worker invalidation, ``last_used_at`` batching
- ``catalog``   in-memory view of models and prices (price in force at request time)
- ``registry``  in-memory view of the nodes, and node choice
- ``upstream``  forwarding to OpenAI-native nodes, streaming pass-through
- ``h1``        the lean HTTP/1.1 client it forwards with (keep-alive pools per node)
- ``adapter``   LiteLLM for nodes that are not OpenAI-native
- ``metering``  usage records: batched writes, spool file on DB failure, replay
- ``tokens``    context-length checks
- ``metrics``   Prometheus metrics
- ``app``       the ASGI app tying them together
"""
