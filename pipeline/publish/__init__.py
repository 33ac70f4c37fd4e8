"""Publish: the Sentinel watchlist (CSV and its ARM publisher) and incidents. Dagster glue in
`assets.py`."""
