"""One place per use case. Services lock rows, call the gateway with a
deterministic idempotency key, apply transitions, save, and notify on commit.

Views, admin actions, management commands and webhook handlers call these
functions; nothing else calls the gateway for money-moving operations.
"""
