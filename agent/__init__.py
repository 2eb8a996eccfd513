"""Node agent: runs on each GPU node beside vLLM (registration, heartbeats, drain). Lands with the fleet issue."""
