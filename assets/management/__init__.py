"""Management commands of the assets app."""
