"""The self-serve dashboard (Reflex): a client of the management REST API (``/api/v1``)."""
