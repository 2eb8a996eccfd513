"""Scheduled jobs (roll-ups, Stripe export, health sweeps, budget alerts). Lands with the billing issue."""
