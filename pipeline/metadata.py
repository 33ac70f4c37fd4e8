"""Small helpers that turn job reports into metadata an analyst can read in the Dagster UI."""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
from pyspark.sql.types import StructType

# Who to ask about these assets (shown on every asset in the UI).
OWNERS = ["team:soc-data-engineering"]


def markdown_table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> str:
    rows = list(rows)
    if not rows:
        return "(none)"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        value = f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def per_day_rows(report: Mapping[str, Mapping[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    return [
        {"date": day, **{k: facts.get(k) for k in keys}} for day, facts in sorted(report.items())
    ]


def table_schema(
    struct: StructType, descriptions: Mapping[str, str] | None = None
) -> dg.TableSchema:
    """A Spark `StructType` as the `dagster/column_schema` the UI shows on the asset page."""
    descriptions = descriptions or {}
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=field.name,
                type=field.dataType.simpleString(),
                description=descriptions.get(field.name),
                constraints=dg.TableColumnConstraints(nullable=field.nullable),
            )
            for field in struct.fields
        ]
    )


def asset_attributes(
    *,
    group: str,
    kinds: set[str],
    columns: StructType | dg.TableSchema,
    description: str,
    deps: Sequence[Any] = (),
) -> dict[str, Any]:
    """What every asset states the same way: its group, owners, kinds, upstream assets, column
    schema (shown on the asset page) and purpose."""
    schema = columns if isinstance(columns, dg.TableSchema) else table_schema(columns)
    return {
        "group_name": group,
        "deps": list(deps),
        "kinds": kinds,
        "owners": OWNERS,
        "metadata": {"dagster/column_schema": schema},
        "description": description,
    }


def daily_asset(
    name: str, partitions: dg.PartitionsDefinition, **attributes: Any
) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`@dg.asset` for a driver-side daily asset: a range of days runs as one step."""
    return dg.asset(
        name=name,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        **asset_attributes(**attributes),
    )
