"""Stripe webhooks: verify, record once, dispatch, settle.

- :mod:`.views`: the two endpoints (platform, Connect), thin wrappers around
- :mod:`.receiver`: ``receive(endpoint, payload, signature_header)``, which
  verifies and records a delivery (also the simulated gateway's event sink);
- :mod:`.pipeline`: locks a recorded event, runs its handler, settles its
  state; ``process_deferred`` and ``replay`` for operators;
- :mod:`.registry`: every handled event type and its handler, in one place;
- :mod:`.handlers`: one small module per area (payments, refunds, disputes,
  transfers, accounts, payouts);
- :mod:`.tasks`: processing on a task worker; :mod:`.operations`: replay,
  catch-up from the Events API, payload purge.
"""
