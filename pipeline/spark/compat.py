"""Spark 3.5 and 4.x alike: Synapse runtimes are Spark 3.4/3.5, the local default is 4.x.

The jobs use these two where Spark 4 has a Column function that 3.5 lacks; everything else they
call exists in both (the Spark 3.5 CI step runs the Spark-job tests on 3.5).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

SPARK_4 = hasattr(Column, "try_cast")


def try_cast(column: Column, to: str) -> Column:
    """`column` as type `to`, null where it cannot be read as one."""
    if SPARK_4:
        return column.try_cast(to)
    # Spark 3.5 with ANSI mode off (its default, and Synapse's): a cast is already null where the
    # text cannot be read.
    return column.cast(to)


def is_valid_utf8(column: Column) -> Column | None:
    """Whether the text's bytes are valid UTF-8; None on Spark 3.5, which cannot tell."""
    return F.is_valid_utf8(column) if SPARK_4 else None
