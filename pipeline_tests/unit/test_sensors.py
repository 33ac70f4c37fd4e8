"""Sensors, with real Dagster sensor contexts, real export folders and a real local HTTP server."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import dagster as dg
import pytest

from pipeline.alerts import build_failure_sensor
from pipeline.definitions import build_definitions
from pipeline.ingest.sensors import (
    build_late_export_sensor,
    export_fingerprint,
    late_export_requests,
    record_fingerprints,
)
from pipeline.settings import Settings, SettingsError, load_settings
from pipeline_tests.conftest import record, write_blob

DAY = dt.date(2026, 11, 20)
TODAY = DAY + dt.timedelta(days=2)


def export_settings(tmp_path: Path, **overrides) -> Settings:
    values = dict(
        source="export",
        export_url=str(tmp_path / "export"),
        lake_url=str(tmp_path / "lake"),
        start_date=DAY - dt.timedelta(days=3),
    )
    values.update(overrides)
    return Settings(**values)


def write_day(root: Path, day: dt.date) -> None:
    for hour in (0, 6, 12, 18):
        write_blob(root, day, hour, 0, [record(f"{day}T{hour:02d}:00:00Z")])


def materialized(settings: Settings, *days: dt.date) -> None:
    """What network_sessions records when it reads these days."""
    record_fingerprints(
        settings.lake_url,
        {d: export_fingerprint(settings.export_url, d) for d in days},
    )


# --- late exports ---------------------------------------------------------------------------


def test_the_fingerprint_covers_the_day_and_the_next_days_first_12_hours(tmp_path):
    settings = export_settings(tmp_path)
    root = Path(settings.export_url)
    write_day(root, DAY)
    before = export_fingerprint(settings.export_url, DAY)
    assert before.files == 4
    write_blob(root, DAY + dt.timedelta(days=1), 13, 0, [record(f"{DAY}T23:59:00Z")])
    assert export_fingerprint(settings.export_url, DAY) == before  # after 12:00: not ours
    write_blob(root, DAY + dt.timedelta(days=1), 3, 5, [record(f"{DAY}T23:59:00Z")])
    after = export_fingerprint(settings.export_url, DAY)
    assert after.files == 5
    assert after.bytes > before.bytes


def test_a_day_changed_after_materialization_is_requested_once(tmp_path):
    settings = export_settings(tmp_path)
    root = Path(settings.export_url)
    for day in (DAY - dt.timedelta(days=1), DAY):
        write_day(root, day)
    materialized(settings, DAY - dt.timedelta(days=1), DAY)

    requests, cursor, _ = late_export_requests(settings, None, TODAY)
    assert requests == []

    # Export retries land a late blob in one of the day's afternoon folders.
    write_blob(root, DAY, 18, 0, [record(f"{DAY}T18:01:00Z")], name="PT05M_1.json")
    requests, cursor, lines = late_export_requests(settings, cursor, TODAY)
    assert [r.partition_key for r in requests] == [DAY.isoformat()]
    assert requests[0].run_key.startswith(f"late-export:{DAY}:5-")
    assert requests[0].tags["beacon/trigger"] == "late_export"
    assert "files 4 → 5" in lines[0]

    # The next tick, before the re-run has happened: nothing new to request.
    again, cursor, _ = late_export_requests(settings, cursor, TODAY)
    assert again == []

    # Another change before the re-run: a new request with a new run key.
    write_blob(root, DAY, 12, 0, [record(f"{DAY}T12:01:00Z")], name="PT05M_1.json")
    third, cursor, _ = late_export_requests(settings, cursor, TODAY)
    assert len(third) == 1
    assert third[0].run_key != requests[0].run_key

    # Once the day is re-materialized, its new fingerprint is the recorded one.
    materialized(settings, DAY)
    assert late_export_requests(settings, cursor, TODAY)[0] == []

    # A blob in the day's first 12 hours may hold the day before's late records: both re-run.
    write_blob(root, DAY, 3, 0, [record(f"{DAY}T03:01:00Z")], name="PT05M_1.json")
    both, _, _ = late_export_requests(settings, cursor, TODAY)
    assert [r.partition_key for r in both] == [str(DAY - dt.timedelta(days=1)), str(DAY)]


def test_days_never_materialized_are_left_to_the_schedule(tmp_path):
    settings = export_settings(tmp_path)
    write_day(Path(settings.export_url), DAY)
    requests, _, lines = late_export_requests(settings, None, TODAY)
    assert requests == []
    assert lines == []


def test_the_sensor_requests_the_daily_job_for_the_late_day(tmp_path):
    settings = export_settings(tmp_path)
    root = Path(settings.export_url)
    write_day(root, DAY)
    materialized(settings, DAY)
    os.utime(next(root.rglob("PT05M.json")), (1, 1))  # rewritten by the export: mtime moves

    defs = build_definitions(settings)
    job = defs.resolve_job_def("daily_beaconing")
    sensor = build_late_export_sensor(settings, job, today=lambda: TODAY)
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == [DAY.isoformat()]
    assert json.loads(result.cursor) == {DAY.isoformat(): result.run_requests[0].run_key[23:]}


def test_in_sample_mode_the_sensor_skips(tmp_path):
    settings = export_settings(tmp_path, source="sample")
    defs = build_definitions(settings)
    sensor = build_late_export_sensor(settings, defs.resolve_job_def("daily_beaconing"))
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
    assert isinstance(result, dg.SkipReason)
    assert "sample" in result.skip_message


# --- run failures ---------------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append(
            {"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)}
        )
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/beaconing"
    finally:
        server.shutdown()
        server.server_close()


def failed_run(settings: Settings, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """A real failure: the export day has no folders."""
    defs = build_definitions(settings)
    export_asset = next(a for a in defs.assets if a.key.path == ["commonsecuritylog_export"])
    return dg.materialize(
        [export_asset],
        partition_key=DAY.isoformat(),
        instance=instance,
        raise_on_error=False,
    )


def test_a_failed_run_is_summarised_and_posted_to_the_webhook(tmp_path, webhook):
    settings = export_settings(tmp_path, failure_webhook_url=webhook)
    with dg.instance_for_test() as instance:
        result = failed_run(settings, instance)
        assert not result.success
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_notifier",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        build_failure_sensor(settings)(context)
    assert len(Receiver.received) == 1
    posted = Receiver.received[0]
    assert posted["path"] == "/hooks/beaconing"
    assert posted["type"] == "application/json"
    summary = posted["json"]
    assert summary["run_id"] == result.run_id
    assert summary["days"] == DAY.isoformat()
    assert summary["failed_steps"][0]["step"] == "commonsecuritylog_export"
    assert summary["failed_steps"][0]["error"].startswith(
        "ExportDayMissingError: 1 day(s) have no export folders"
    )
    assert summary["text"].startswith(f"Dagster run {result.run_id} of job ")
    assert "FAILED (days 2026-11-20)" in summary["text"]


def test_without_a_webhook_the_summary_is_only_logged(tmp_path, webhook, caplog):
    settings = export_settings(tmp_path)
    with dg.instance_for_test() as instance:
        result = failed_run(settings, instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_notifier",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        build_failure_sensor(settings)(context)
    assert Receiver.received == []


def test_an_unreachable_webhook_does_not_break_the_sensor(tmp_path):
    settings = export_settings(tmp_path, failure_webhook_url="http://127.0.0.1:9/nothing-here")
    with dg.instance_for_test() as instance:
        result = failed_run(settings, instance)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_notifier",
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            dagster_event=result.get_run_failure_event(),
        ).for_run_failure()
        assert build_failure_sensor(settings)(context) is None


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/services/T0/B0/x", "http://127.0.0.1:8080/hook", ""],
)
def test_webhook_urls_that_are_allowed(url):
    settings = load_settings({"BEACON_FAILURE_WEBHOOK_URL": url})
    assert settings.failure_webhook_url == (url or None)


@pytest.mark.parametrize(
    "url",
    ["http://hooks.example.com/x", "http://localhost:8080/x", "ftp://127.0.0.1/x", "hooks"],
)
def test_webhook_urls_that_are_refused(url):
    with pytest.raises(SettingsError, match="BEACON_FAILURE_WEBHOOK_URL"):
        load_settings({"BEACON_FAILURE_WEBHOOK_URL": url})


def test_the_definitions_carry_the_sensors_and_the_freshness_checks(tmp_path):
    defs = build_definitions(export_settings(tmp_path))
    names = {s.name for s in defs.sensors}
    assert {"late_export_sensor", "run_failure_notifier", "freshness_checks_sensor"} <= names
    checks = {key for c in defs.asset_checks for key in c.check_keys}
    assert {k.asset_key.path[-1] for k in checks} == {"beaconing_candidates", "sentinel_watchlist"}
    job = defs.resolve_job_def("daily_beaconing")
    # The freshness checks are not run inside the runs they judge.
    assert not checks & set(job.asset_layer.asset_graph.asset_check_keys)
    dg.Definitions.validate_loadable(defs)


def test_every_asset_has_a_group_an_owner_kinds_and_a_column_schema(tmp_path):
    defs = build_definitions(export_settings(tmp_path))
    groups = {}
    for asset in defs.assets:
        for key in asset.keys:
            groups[key.path[-1]] = asset.group_names_by_key[key]
            assert asset.owners_by_key[key] == ["team:soc-data-engineering"]
            assert asset.specs_by_key[key].kinds
            schema = asset.metadata_by_key[key]["dagster/column_schema"]
            assert isinstance(schema, dg.TableSchema)
            assert schema.columns
    assert groups == {
        "commonsecuritylog_export": "ingest",
        "network_sessions": "ingest",
        "pair_daily_stats": "detect",
        "beaconing_candidates": "detect",
        "enriched_beacons": "enrich",
        "sentinel_watchlist": "publish",
    }
