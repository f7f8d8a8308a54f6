"""Management commands of the lineage app."""
