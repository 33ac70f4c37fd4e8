"""`python -m pipeline doctor`: check a deployment before its first run, one line per check.

Answers "will tonight's run work?" in seconds: settings valid, export container reachable and
holding recent days, lake writable, Spark runnable, Log Analytics queryable, the Synapse pool
answering, the Sentinel watchlist readable, Dagster instance storage reachable. Every
failure names what to fix; nothing is written except a probe file in the lake, removed again.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.ingest import export_layout
from pipeline.settings import Settings, SettingsError, load_settings


@dataclass(frozen=True)
class Finding:
    check: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"[{'ok' if self.ok else 'FAIL'}] {self.check}: {self.detail}"


def _export(settings: Settings) -> str:
    if settings.source == "sample":
        return f"sample mode: days are generated into {settings.export_url}"
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    blobs = export_layout.list_day_blobs(
        settings.export_url, yesterday, settings.workspace_resource_id
    )
    if not blobs:
        raise FileNotFoundError(
            f"reachable, but no blobs for {yesterday} under "
            f"{export_layout.describe_expected(settings.export_url, yesterday, None)}: is the "
            "data-export rule for CommonSecurityLog enabled (it exports nothing from before it "
            "was created)?"
        )
    return f"{len(blobs)} blobs for {yesterday} under {settings.export_url}"


def _lake(settings: Settings) -> str:
    return settings.lake.probe()


def _spark(settings: Settings) -> str:
    if settings.spark_mode == "local":
        from pipeline.resources.spark import require_java

        require_java()
        return f"local Spark ({settings.spark_master}); Java found"
    if settings.spark_master.startswith("sc://"):
        from pipeline.resources.spark import require_connect_server

        require_connect_server(settings.spark_master)
        return f"a Spark Connect server listens at {settings.spark_master}"
    return f"{settings.spark_mode} mode: jobs leave this process (not contacted by doctor)"


def _log_analytics(settings: Settings) -> str:
    """A tiny query with the identity in use: query mode and Sentinel threat intel need it."""
    if not settings.log_analytics_workspace_id:
        return "not configured (LOG_ANALYTICS_WORKSPACE_ID empty): query mode and Sentinel TI off"
    from pipeline.azure.log_analytics import LogAnalytics

    end = dt.datetime.now(dt.UTC)
    with LogAnalytics(
        settings.log_analytics_workspace_id, settings.log_analytics_endpoint, retry_total=1
    ) as workspace:
        try:
            table = workspace.query(
                "CommonSecurityLog | summarize count()", end - dt.timedelta(hours=1), end
            )
        except Exception as error:
            raise RuntimeError(
                f"{error} (the identity needs the Log Analytics Reader role on the workspace)"
            ) from error
    rows = table.rows[0][0] if table.rows else 0
    return f"workspace {settings.log_analytics_workspace_id}: {rows} CommonSecurityLog rows in 1 h"


def _synapse(settings: Settings) -> str:
    """Token for Synapse and a listing of the pool's batches, as a run does before it submits."""
    if settings.spark_mode != "synapse":
        return "not used (BEACON_SPARK is not synapse)"
    from pipeline.azure.credentials import azure_credential
    from pipeline.azure.livy import LivyClient
    from pipeline.resources.synapse import synapse_runner

    runner = synapse_runner(settings)
    livy = LivyClient(
        runner.endpoint, runner.spark_pool, runner.livy_api_version, azure_credential()
    )
    livy.check_identity()
    livy.check_access()
    return f"Spark pool {runner.spark_pool} at {runner.endpoint} answers"


def _sentinel(settings: Settings) -> str:
    """Read the watchlist (never write) with the identity that will publish it."""
    if not settings.sentinel_configured:
        return "not configured (SENTINEL_* empty): the watchlist is written as CSV to the lake"
    from pipeline.publish.watchlist import ArmWatchlistClient, WatchlistTarget

    client = ArmWatchlistClient(WatchlistTarget.from_settings(settings), retry_total=1)
    try:
        client.check_identity()
        watchlist = client.get_watchlist()
    finally:
        client.close()
    state = "exists" if watchlist else "does not exist yet (the first run creates it)"
    return f"{client.target.describe()}: {state}"


def _instance() -> str:
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if not home or not os.path.exists(os.path.join(home, "dagster.yaml")):
        raise FileNotFoundError(
            "DAGSTER_HOME is not set or has no dagster.yaml: copy dagster.postgres.yaml "
            "(production) or dagster.yaml (one machine) there"
        )
    instance = dg.DagsterInstance.get()
    try:
        instance.get_runs(limit=1)  # reaches the run storage (PostgreSQL in production)
        kind = type(instance.run_storage).__name__
    finally:
        instance.dispose()
    return f"{home}/dagster.yaml: {kind} reachable"


def diagnose(env: dict[str, str] | None = None) -> list[Finding]:
    """Run every check; a failing check does not stop the others."""
    try:
        settings = load_settings(env)
    except SettingsError as error:
        return [Finding("settings", False, str(error))]
    findings = [Finding("settings", True, f"valid (source {settings.source})")]
    checks: list[tuple[str, Callable[[], str]]] = [
        ("export", lambda: _export(settings)),
        ("lake", lambda: _lake(settings)),
        ("spark", lambda: _spark(settings)),
        ("log analytics", lambda: _log_analytics(settings)),
        ("synapse", lambda: _synapse(settings)),
        ("sentinel", lambda: _sentinel(settings)),
        ("dagster instance", _instance),
    ]
    for name, check in checks:
        try:
            findings.append(Finding(name, True, check()))
        except Exception as error:  # a doctor reports every failure, whatever its type
            findings.append(Finding(name, False, f"{type(error).__name__}: {error}"))
    return findings


def main() -> int:
    findings = diagnose()
    for finding in findings:
        print(finding.line())
    return 0 if all(f.ok for f in findings) else 1
