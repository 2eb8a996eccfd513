"""One module per page; each exposes ``page()`` and is registered in ``web/web.py``."""
