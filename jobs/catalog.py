"""The modules whose import registers jobs (``jobs.registry.all_jobs`` imports them first).

Add a module here when it defines ``@job`` functions; list only modules that exist.
"""

from __future__ import annotations

JOB_MODULES: list[str] = [
    "jobs.fleet",
    "jobs.spool",
    "jobs.housekeeping",
    "jobs.billing",
]
