"""Metering roll-ups, pricing, credits, statements and Stripe usage billing.

* ``histogram`` — mergeable latency histograms (log buckets) and their SQL form.
* ``rollup``    — usage records → hourly and daily roll-ups, incremental and idempotent.
* ``pricing``   — pure functions: volume tiers, free allowance, credits order; integer pico-dollars.
* ``accrual``   — closed hours' roll-ups → the append-only billing ledger (priced once).
* ``statements``— per org and month: lines, discounts, credits, amount due; the billing summary.
* ``stripe``    — the Stripe client seam, platform objects (meters, prices), customers, checkout.
* ``export``    — the meter-event outbox: one event per org × hour × meter, deterministic identifiers.
* ``webhooks``  — Stripe events, each processed once.
* ``alerts``    — budget (80 % / 100 %) and spike alerts, mailed through ``cic.notify``.
* ``reconcile`` — usage records = roll-ups = ledger = exported quantities (= what Stripe holds).
"""
