"""The service layer: every state change of the control plane goes through here, authorised.

Functions take a SQLModel ``Session`` and an ``Actor``; they flush but never commit, so a caller
(one HTTP request, one CLI command) commits everything it did as one transaction.
"""
