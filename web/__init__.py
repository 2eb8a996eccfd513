"""The Reflex dashboard. Lands with the dashboard issue."""
