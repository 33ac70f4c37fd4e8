"""enriched_beacons: reported pairs with context and a final risk ranking, ready for analysts."""

import dagster as dg

from pipeline.assets.candidates import read_day
from pipeline.assets.metadata import OWNERS, markdown_table, table_schema
from pipeline.enrichment.ranking import rank
from pipeline.partitions import days_in_run
from pipeline.settings import Settings
from pipeline.spark_jobs import beaconing_candidates, lake
from pipeline.spark_jobs.schemas import BEACONING_CANDIDATES

GROUP = "enrich"
TABLE = "enriched_beacons"
ENRICHMENT_SOURCES = {
    "prevalence": "internal hosts reaching the destination in the window (beaconing_candidates)",
    "first_seen_age_days": "days since the pair first appeared in the window",
    "geoip / asn / whois / threat intel": "not configured",
}


def build(settings: Settings, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=TABLE,
        group_name=GROUP,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        deps=["beaconing_candidates"],
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        metadata={
            "dagster/column_schema": dg.TableSchema(
                columns=[
                    *table_schema(BEACONING_CANDIDATES).columns,
                    dg.TableColumn("risk_score", "double", "final risk, 0–1"),
                    dg.TableColumn("risk_rank", "bigint", "1 = look at this first"),
                ]
            )
        },
        description=(
            "Beaconing candidates with enrichment (prevalence, first-seen age; GeoIP, WHOIS and "
            "threat intel when configured) and a final risk rank, sorted by it."
        ),
    )
    def enriched_beacons(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        per_day = []
        latest = None
        for day in days_in_run(context):
            ranked = rank(read_day(settings.lake_url, beaconing_candidates.TABLE, day.isoformat()))
            lake.write_pandas_day(ranked, settings.lake_url, TABLE, day, "part-0.parquet")
            lake.write_manifest(settings.lake_url, TABLE, day, {"rows": len(ranked)})
            per_day.append({"date": day.isoformat(), "rows": len(ranked)})
            latest = ranked
        rows = sum(r["rows"] for r in per_day)
        top = latest.head(20).to_dict("records") if latest is not None else []
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": rows,
                "rows": rows,
                "enrichment_sources": dg.MetadataValue.json(ENRICHMENT_SOURCES),
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
                            "reasons",
                        ],
                    )
                ),
                "path": dg.MetadataValue.path(lake.table_url(settings.lake_url, TABLE)),
            }
        )

    return enriched_beacons
