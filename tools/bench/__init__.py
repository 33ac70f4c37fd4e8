"""`make bench`: what a daily run, a backfill, the notebook query and DuckDB cost here."""
