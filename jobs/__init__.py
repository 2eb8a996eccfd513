"""Scheduled jobs: each runs once per period across any number of instances.

- ``registry``  ``@job(name, every=|cron=, ...)``, ``all_jobs()``, ``JobContext``, ``JobSpec``
- ``catalog``   the modules that register jobs
- ``schedule``  periods and APScheduler triggers (intervals aligned to the epoch, crontab in UTC)
- ``locks``     one lock per job: Redis, Upstash (REST), PostgreSQL advisory lock, or in-process
- ``records``   ``job_runs``: one row per (job, period), claimed before a run, finished after
- ``runner``    ``run_job``: lock → claim → run with a timeout → record → release
- ``scheduler`` APScheduler 3 with its job store on the main database; every execution goes through ``run_job``
- ``fleet``, ``spool``, ``housekeeping``: the node-health sweep, usage spool replay, job history pruning
"""
