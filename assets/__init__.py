"""Runs, run configs, materializations (steps) and dynamic partition keys."""
