"""Ingest: the raw export day (found, pulled from Log Analytics or generated) and the day's
network sessions in the lake. Dagster glue in `assets.py`; the Spark job is `network_sessions`."""
