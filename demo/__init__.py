"""The demo pipeline: daily orders, a customer list, enrichment, revenue and a weekly report."""
