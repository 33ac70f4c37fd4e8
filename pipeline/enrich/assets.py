"""enriched_beacons: reported pairs with context and a final risk ranking, ready for analysts."""

import datetime as dt

import dagster as dg

from pipeline.detect import beaconing_candidates
from pipeline.enrich import sentinel_indicators
from pipeline.enrich.enrich import ENRICHED_COLUMNS, enrich_days
from pipeline.lake.schemas import BEACONING_CANDIDATES
from pipeline.metadata import (
    daily_asset,
    markdown_table,
    table_schema,
)
from pipeline.partitions import days_in_run
from pipeline.settings import Settings

GROUP = "enrich"
TABLE = "enriched_beacons"
# pandas dtypes as the SQL-ish type names the other assets' column schemas use.
_TYPE_NAMES = {
    "string": "string",
    "Float64": "double",
    "float64": "double",
    "Int64": "bigint",
    "int64": "bigint",
    "boolean": "boolean",
    "bool": "boolean",
    "datetime64[ns, UTC]": "timestamp",
}
COLUMN_DESCRIPTIONS = {
    "geo_country": "ISO country of the destination (GeoIP City db)",
    "geo_city": "city of the destination, English name (GeoIP City db)",
    "geo_latitude": "latitude (GeoIP City db)",
    "geo_longitude": "longitude (GeoIP City db)",
    "asn": "autonomous system number (GeoIP ASN db)",
    "as_org": "autonomous system organisation (GeoIP ASN db)",
    "hosting_provider": "ASN is a curated cloud/VPS host (enrichment/geoip.py HOSTING_ASNS)",
    "new_asn": "ASN first appeared among the window's destinations in its last 7 days",
    "whois_registrant": "RDAP registrant of the destination's network",
    "whois_network": "RDAP network name",
    "whois_cidr": "RDAP network range",
    "whois_allocated": "RDAP registration date of the network",
    "whois_status": "ok | not found | cached … | off | not public | no network: … | "
    "rate limited | failed: … | skipped: …",
    "ti_match": "a live threat-intel indicator names the destination IP, network or hostname",
    "ti_indicator": "the best (most confident) matching indicator",
    "ti_source": "every source that matched, '; '-separated",
    "ti_confidence": "confidence 0–100 of the best match",
    "ti_description": "description of the best match",
    "ti_matches": "how many indicators matched",
    "risk_score": "final risk, 0–1 (enrichment/ranking.py)",
    "risk_rank": "1 = look at this first",
}


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @daily_asset(
        TABLE,
        partitions,
        group=GROUP,
        deps=["beaconing_candidates"],
        kinds={"pandas", "parquet"},
        columns=dg.TableSchema(
            columns=[
                *table_schema(BEACONING_CANDIDATES).columns,
                *[
                    dg.TableColumn(name, _TYPE_NAMES[dtype], COLUMN_DESCRIPTIONS[name])
                    for name, dtype in ENRICHED_COLUMNS.items()
                ],
            ]
        ),
        description=(
            "Beaconing candidates with enrichment (prevalence, first-seen age; GeoIP/ASN, RDAP "
            "and threat intel when configured) and a final risk rank, sorted by it."
        ),
    )
    def enriched_beacons(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        candidates = {
            day: settings.lake.read_day(beaconing_candidates.TABLE, day.isoformat())
            for day in days_in_run(context)
        }
        # Threat intel: the local file, and Sentinel's own indicators when a Log Analytics
        # workspace is configured.
        enriched = enrich_days(
            settings,
            candidates,
            now=dt.datetime.now(dt.UTC),
            sentinel_indicators=sentinel_indicators.fetch_indicators,
        )
        per_day = []
        for day, ranked in enriched.days.items():
            settings.lake.write_day_file(TABLE, day, "part-0.parquet", ranked)
            settings.lake.write_manifest(TABLE, day, {"rows": len(ranked)})
            per_day.append({"date": day.isoformat(), "rows": len(ranked)})
        rows = sum(r["rows"] for r in per_day)
        latest = list(enriched.days.values())[-1] if enriched.days else None
        top = latest.head(20).to_dict("records") if latest is not None else []
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "rows": rows,
                "enrichment_sources": dg.MetadataValue.json(enriched.sources),
                "per_day": dg.MetadataValue.md(markdown_table(per_day)),
                "top_ranked": dg.MetadataValue.md(
                    markdown_table(
                        top,
                        [
                            "risk_rank",
                            "risk_score",
                            "SourceIP",
                            "DestinationIP",
                            "DestinationPort",
                            "kind",
                            "as_org",
                            "geo_country",
                            "ti_source",
                            "reasons",
                        ],
                    )
                ),
                "path": dg.MetadataValue.path(settings.lake.table_url(TABLE)),
            }
        )

    return enriched_beacons
