"""A resource that counts its lifecycle calls, for resource tests."""

from __future__ import annotations

from typing import ClassVar

from flowstone import BaseResource


class CountingResource(BaseResource):
    """Records setup/teardown calls in a class-level journal the tests inspect."""

    journal: ClassVar[list[str]] = []

    def __init__(
        self, label: str = "unset", fail_setup: bool = False, fail_teardown: bool = False
    ) -> None:
        self.label = label
        self.fail_setup = fail_setup
        self.fail_teardown = fail_teardown

    def setup(self) -> None:
        if self.fail_setup:
            raise ConnectionError("cannot reach the counter service")
        self.journal.append(f"setup:{self.label}")

    def teardown(self) -> None:
        self.journal.append(f"teardown:{self.label}")
        if self.fail_teardown:
            raise RuntimeError("the counter service hung up during teardown")
