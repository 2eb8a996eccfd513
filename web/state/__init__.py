"""Typed state classes of the dashboard; each event handler calls the management API (``web.api``)."""
