"""The demo's one resource: a product catalog with prices."""

from __future__ import annotations

from typing import Final

from flowstone import BaseResource

PRICES: Final = {"anvil": 120.0, "rope": 15.5, "rocket": 980.0, "magnet": 42.0}


class ProductCatalog(BaseResource):
    """Prices per product, in one currency (configured in ``FLOWSTONE["RESOURCES"]``)."""

    def __init__(self, currency: str = "EUR", markup: float = 1.0) -> None:
        self.currency = currency
        self.markup = markup
        self._prices: dict[str, float] = {}

    def setup(self) -> None:
        """Load the price list."""
        self._prices = {name: round(price * self.markup, 2) for name, price in PRICES.items()}

    def price(self, product: str) -> float:
        """Return the unit price of ``product``."""
        return self._prices[product]
