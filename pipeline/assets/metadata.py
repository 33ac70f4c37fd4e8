"""Small helpers that turn job reports into metadata an analyst can read in the Dagster UI."""

from collections.abc import Iterable, Mapping
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
