"""Reflex configuration of the dashboard (``web/``). ``cic up`` builds and serves it on the API's port."""

import reflex as rx
from reflex_base.plugins.sitemap import SitemapPlugin

config = rx.Config(
    app_name="web",
    telemetry_enabled=False,
    show_built_with_reflex=False,
    # One process (cic up): states in memory, so neither the session token nor a just-created key is ever
    # written to disk. Several dashboard workers: set REFLEX_REDIS_URL (then state_manager_mode=redis).
    state_manager_mode=rx.constants.StateManagerMode.MEMORY,
    plugins=[rx.plugins.RadixThemesPlugin(theme=rx.theme(accent_color="indigo", gray_color="slate", radius="medium"))],
    disable_plugins=[SitemapPlugin],
)
