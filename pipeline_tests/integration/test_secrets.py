"""A planted secret never reaches the run's logs, its metadata, the lake or the watchlist.

Secrets reach the pipeline only as azure-identity's environment variables (or its other
credential sources), never as settings. The whole chain runs through real Dagster with a real
instance (sqlite event log, compute logs) and real local Spark, with the secret in the
environment; then every byte the run produced is searched for it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import dagster as dg

from pipeline.definitions import build_definitions
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import load_settings
from pipeline_tests.integration.test_faults import D, beacon, environment, write_records


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_a_planted_secret_is_in_no_log_metadata_lake_or_watchlist(
    spark, tmp_path, monkeypatch, capfd, caplog
):
    secret = f"planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("AZURE_CLIENT_SECRET", secret)
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000c11e")
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000aa")
    export, lake_root, home = tmp_path / "export", tmp_path / "lake", tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(Path("dagster.yaml").read_text())
    write_records(export, beacon("10.0.0.5", "203.0.113.9", 443, 60.0, seed=7), minute=0)
    settings = load_settings(environment(export, lake_root))
    assert secret not in repr(settings)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        defs = build_definitions(settings)
        result = dg.materialize(
            list(defs.assets),
            partition_key=D.isoformat(),
            instance=instance,
            resources={"spark": SparkJobRunner(spark_config=spark_config(settings))},
        )
        assert result.success
        records = instance.get_records_for_run(result.run_id).records
        events = [r.event_log_entry for r in records]

    watchlist = lake_root / "sentinel_watchlist" / f"date={D.isoformat()}" / "watchlist.csv"
    assert watchlist.exists() and watchlist.stat().st_size > 0
    assert len(events) > 20  # the run really logged its steps and metadata
    needle = secret.encode()
    assert files_containing(lake_root, needle) == []
    assert files_containing(home, needle) == []  # event log, compute logs, run storage
    assert not [e for e in events if secret in str(e)]
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    assert secret not in caplog.text


def test_no_setting_carries_a_credential():
    """Secrets are not settings: no variable of the settings table is credential-shaped."""
    from pipeline.settings import SPECS

    shaped = ("SECRET", "PASSWORD", "TOKEN", "KEY", "CONNECTION_STRING", "SAS")
    assert [s.env for s in SPECS if any(word in s.env for word in shaped)] == []
