"""The platform's balance: card payments pending until they settle, then available."""

from __future__ import annotations

from collections.abc import Callable
from threading import RLock

from .objects import (
    JSON,
)
from .rules import (
    SETTLEMENT_DELAY_SECONDS,
)


class PlatformBalance:
    """The store's account of the platform's own money.

    A part of :class:`~.store.SimulatedStripe`, which holds the attributes below.
    """

    lock: RLock
    platform_available: dict[str, int]
    platform_pending: list[JSON]
    now: Callable[[], int]

    def platform_balance(self, currency: str) -> dict[str, int]:
        """The platform's ``available`` and ``pending`` balance in ``currency``."""
        currency = currency.lower()
        with self.lock:
            self._settle_balances()
            pending = sum(
                entry["amount"] for entry in self.platform_pending if entry["currency"] == currency
            )
            return {"available": self.platform_available.get(currency, 0), "pending": pending}

    def make_funds_available(self) -> None:
        """Settle every pending card payment now (as if its ``available_on`` had passed)."""
        with self.lock:
            for entry in self.platform_pending:
                entry["available_on"] = min(entry["available_on"], self.now())
            self._settle_balances()

    def _settle_balances(self) -> None:
        now = self.now()
        still_pending = []
        for entry in self.platform_pending:
            if entry["available_on"] <= now:
                self._credit_available(entry["currency"], entry["amount"])
            else:
                still_pending.append(entry)
        self.platform_pending = still_pending

    def _credit_available(self, currency: str, amount: int) -> None:
        self.platform_available[currency] = self.platform_available.get(currency, 0) + amount

    def _add_pending(self, charge: JSON, amount: int) -> None:
        """Money from ``charge`` the platform receives, pending until the charge settles."""
        for entry in self.platform_pending:
            if entry["charge"] == charge["id"]:
                entry["amount"] += amount
                return
        available_on = int(charge["created"]) + SETTLEMENT_DELAY_SECONDS
        if available_on <= self.now():
            self._credit_available(charge["currency"], amount)
            return
        self.platform_pending.append(
            {
                "charge": charge["id"],
                "currency": charge["currency"],
                "amount": amount,
                "available_on": available_on,
            }
        )

    def _debit_platform(self, currency: str, amount: int, *, charge: str | None = None) -> None:
        """Money leaves the platform: from ``charge``'s pending funds first, then available."""
        if charge is not None:
            for entry in self.platform_pending:
                if entry["charge"] == charge:
                    taken = min(entry["amount"], amount)
                    entry["amount"] -= taken
                    amount -= taken
                    break
        self._credit_available(currency, -amount)
