"""Entry point of a Livy batch on a Synapse Spark pool: runs one pipeline Spark job under Pipes.

The Dagster side (`pipeline.resources.synapse`) uploads this package as a zip plus a three-line
`entry.py` that calls `main`, and submits a Livy batch whose args name the job
(`--job pipeline.detect.pair_daily_stats:run`) and carry the Dagster Pipes bootstrap
parameters. The job's keyword parameters travel in the Pipes context's `extras` (a blob), not in
the args: a month of export blob URLs would exceed the command-line length limit.

On the pool this module:
1. opens Dagster Pipes over Azure Blob Storage (`PipesAzureBlobStorageContextLoader` /
   `…MessageWriter`): with `AZURE_STORAGE_CONNECTION_STRING` set (the local fake Livy, Azurite)
   it uses that, otherwise `DefaultAzureCredential` against `--pipes-account-url`;
2. gets the pool's SparkSession (the Livy `conf` configured it), imports the named job (a
   module-level function of one of `JOB_MODULES`) and runs it with the decoded parameters;
3. reports the job's result as a Pipes custom message `{"report": …}` and exits 0, or logs the
   traceback (it lands in the driver log) and exits 1 so Livy marks the batch dead.

It imports neither Dagster nor anything outside the standard library, `dagster_pipes` (bundled in
the zip), `azure-storage-blob`/`azure-identity` and pyspark (both on Synapse runtimes), and
`pipeline.azure.storage` (for the connection string's variable name; the jobs import it anyway).

The codec (`encode`/`decode`) is shared by both sides: job parameters and reports hold
`datetime.date`s, tuples and frozen dataclasses (`DetectionParams`), which plain JSON loses.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

# The modules whose functions a batch may run: the Spark jobs of the stages and the runner of
# several of them in one session. Nothing else importable is reachable through `--job`.
JOB_MODULES = frozenset(
    {
        "pipeline.ingest.network_sessions",
        "pipeline.detect.pair_daily_stats",
        "pipeline.detect.beaconing_candidates",
        "pipeline.detect.notebook_query",
        "pipeline.spark.steps",
    }
)
_JOB_MODULES_TEXT = ", ".join(sorted(JOB_MODULES))
# Dataclasses the codec may rebuild: only the pipeline's own (never an arbitrary importable class).
DATACLASS_MODULE_PREFIX = "pipeline."
# How often the job side uploads a chunk of Pipes messages (seconds): log lines reach the Dagster
# run this quickly, at the cost of one small blob per interval with something to say.
PIPES_UPLOAD_INTERVAL_S = 1.0
REPORT_KEY = "report"


class CodecError(ValueError):
    """A value the codec cannot carry between Dagster and the pool."""


# ---------------------------------------------------------------------------------------------
# Codec: JSON with tags for the types job parameters and reports use.


def encode(value: Any) -> Any:
    """A JSON-ready form of `value`; `decode` gives back an equal value of the same types."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"$frozenset": [encode(v) for v in sorted(value, key=repr)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode(v) for k, v in value.items()}
        return {"$dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith(DATACLASS_MODULE_PREFIX):
            raise CodecError(f"dataclass {cls.__module__}.{cls.__qualname__} is not the pipeline's")
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"$dataclass": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    # numpy / pandas scalars in reports (counts, ratios): their Python value.
    item = getattr(value, "item", None)
    if callable(item):
        return encode(item())
    raise CodecError(f"cannot send a {type(value).__name__} to or from the Spark pool: {value!r}")


def decode(value: Any) -> Any:
    """The value `encode` was given."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "$date" in value:
        return dt.date.fromisoformat(value["$date"])
    if "$datetime" in value:
        return dt.datetime.fromisoformat(value["$datetime"])
    if "$tuple" in value:
        return tuple(decode(v) for v in value["$tuple"])
    if "$frozenset" in value:
        return frozenset(decode(v) for v in value["$frozenset"])
    if "$dict" in value:
        return {_hashable(decode(k)): decode(v) for k, v in value["$dict"]}
    if "$dataclass" in value:
        cls = _resolve(
            value["$dataclass"],
            lambda module: module.startswith(DATACLASS_MODULE_PREFIX),
            f"under {DATACLASS_MODULE_PREFIX}",
        )
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise CodecError(f"{value['$dataclass']} is not a dataclass")
        return cls(**{k: decode(v) for k, v in value["fields"].items()})
    return {k: decode(v) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def dumps(value: Any) -> str:
    return json.dumps(encode(value), sort_keys=True)


def loads(text: str) -> Any:
    return decode(json.loads(text))


def _resolve(name: str, allowed: Callable[[str], bool], where: str) -> Any:
    """`module:qualname` → the object, refusing any module `allowed` refuses."""
    module_name, _, qualname = name.partition(":")
    if not qualname or not allowed(module_name):
        raise CodecError(f"{name!r}: expected 'module:name' with the module {where}")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


def job_name(job: Callable[..., Any]) -> str:
    """The `module:function` name a batch runs; the job must live in one of JOB_MODULES."""
    name = f"{job.__module__}:{job.__qualname__}"
    if job.__module__ not in JOB_MODULES or "<" in job.__qualname__:
        raise CodecError(
            f"{name}: only module-level functions of the Spark job modules "
            f"({_JOB_MODULES_TEXT}) can run on the pool"
        )
    return name


def resolve_job(name: str) -> Callable[..., Any]:
    job = _resolve(name, JOB_MODULES.__contains__, f"one of {_JOB_MODULES_TEXT}")
    if not callable(job):
        raise CodecError(f"{name} is not a function")
    return job


# ---------------------------------------------------------------------------------------------
# The batch's main program.


def blob_service(account_url: str) -> Any:
    """Blob client for the Pipes container: the connection string when set (tests), otherwise
    the pool's identity through DefaultAzureCredential."""
    from azure.storage.blob import BlobServiceClient

    # Imported here: the pool needs pipeline.azure.storage (fsspec) for the jobs anyway, the codec
    # does not.
    from pipeline.azure.storage import CONNECTION_STRING_ENV

    connection_string = os.environ.get(CONNECTION_STRING_ENV)
    if connection_string:
        return BlobServiceClient.from_connection_string(connection_string)
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url, credential=DefaultAzureCredential())


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run one beacon-pipeline Spark job (Livy batch)")
    parser.add_argument("--job", required=True, help="module:function of a Spark job module")
    parser.add_argument(
        "--pipes-account-url", required=True, help="https://ACCOUNT.blob.core.windows.net"
    )
    # The Pipes bootstrap arguments (--dagster-pipes-context/-messages) are read by dagster_pipes.
    args, _ = parser.parse_known_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job named in the args under Dagster Pipes; 0 on success, 1 on any failure."""
    from dagster_pipes import (
        PipesAzureBlobStorageContextLoader,
        PipesAzureBlobStorageMessageWriter,
        PipesCliArgsParamsLoader,
        open_dagster_pipes,
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    params_loader = PipesCliArgsParamsLoader()
    if not params_loader.is_dagster_pipes_process():
        print(
            "synapse_entry: --dagster-pipes-context is missing: this batch must be submitted by "
            "the pipeline's SynapseJobRunner",
            file=sys.stderr,
        )
        return 2
    # Plain prints land in the driver log, which Dagster tails into the run and its errors.
    print(f"beacon entry: starting {args.job}", flush=True)
    client = blob_service(args.pipes_account_url)
    spark = None
    try:
        with open_dagster_pipes(
            context_loader=PipesAzureBlobStorageContextLoader(client),
            message_writer=PipesAzureBlobStorageMessageWriter(
                client, interval=PIPES_UPLOAD_INTERVAL_S
            ),
            params_loader=params_loader,
        ) as pipes:
            job = resolve_job(args.job)
            params = decode(pipes.extras["params"])
            from pyspark.sql import SparkSession

            spark = SparkSession.builder.appName(f"beacon {args.job}").getOrCreate()
            code_origin = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            pipes.log.info(
                f"pool: running {args.job} on Spark {spark.version} "
                f"(code from {code_origin}, {len(params)} parameter(s))"
            )
            report = job(spark, **params)
            pipes.report_custom_message({REPORT_KEY: encode(report)})
            pipes.log.info(f"pool: {args.job} finished")
        print(f"beacon entry: {args.job} finished", flush=True)
    except Exception:
        # Into the driver log, which the Dagster side tails into its error message.
        traceback.print_exc()
        return 1
    finally:
        if spark is not None:
            spark.stop()
    return 0
