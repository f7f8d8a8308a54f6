"""App configuration for the demo pipeline."""

from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Holds the demo's assets, resource and its ``demo`` management command."""

    name = "demo"
    verbose_name = "FlowStone demo pipeline"
