#!/usr/bin/env python
"""Django's command-line utility for FlowStone."""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Run a management command with the FlowStone settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowstone.settings")
    from django.core.management import execute_from_command_line  # noqa: PLC0415 - after env

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
