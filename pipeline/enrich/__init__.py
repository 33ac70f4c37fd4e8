"""Enrich: GeoIP/ASN, RDAP, threat intelligence and the final risk ranking of the candidates
(pandas, no Spark). Dagster glue in `assets.py`."""
