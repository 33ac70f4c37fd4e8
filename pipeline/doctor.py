"""`python -m pipeline doctor`: check a deployment before its first run, one line per check.

Answers "will tonight's run work?" in seconds: settings valid, export container reachable and
holding recent days, lake writable, Spark runnable, Dagster instance storage reachable. Every
failure names what to fix; nothing is written except a probe file in the lake, removed again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pipeline import export_layout, storage
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
    fs, root = storage.filesystem(settings.lake_url)
    probe = f"{root.rstrip('/')}/_doctor/probe-{uuid.uuid4().hex}.txt"
    fs.makedirs(probe.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(probe, "w") as handle:
        handle.write("probe")
    try:
        with fs.open(probe, "r") as handle:
            if handle.read() != "probe":
                raise OSError(f"{probe} read back different content")
    finally:
        fs.rm(probe)
        if not storage.is_remote(settings.lake_url):
            # Blob stores have no empty folders to remove; a local one stays if not empty.
            with contextlib.suppress(OSError):
                fs.rmdir(probe.rsplit("/", 1)[0])
    return f"wrote, read and removed a probe file under {settings.lake_url}"


def _spark(settings: Settings) -> str:
    if settings.spark_mode == "local":
        from pipeline.resources.spark import require_java

        require_java()
        return f"local Spark ({settings.spark_master}); Java found"
    return f"{settings.spark_mode} mode: jobs leave this process (not contacted by doctor)"


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
