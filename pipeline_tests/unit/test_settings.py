"""Unit tests of pipeline.settings: defaults, every validator, and the generated README table."""

from __future__ import annotations

import dataclasses
import datetime as dt

import fsspec
import pytest

from pipeline.settings import (
    RFC1918,
    SPECS,
    Settings,
    SettingsError,
    load_settings,
    settings_table_markdown,
)

WORKSPACE = (
    "/subscriptions/0000AAAA-1111-2222-3333-444455556666/resourceGroups/SOC-RG/providers/"
    "Microsoft.OperationalInsights/workspaces/Sentinel-WS"
)


def error_of(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    return str(caught.value)


# --- defaults ----------------------------------------------------------------------------------


def test_defaults():
    settings = load_settings({})
    assert settings.source == "sample"
    assert settings.lookback_days == 21
    assert settings.lake_url == "./.data/lake"
    assert settings.export_url == "./.data/export"
    assert settings.internal_networks == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    assert settings.workspace_resource_id is None
    assert settings.device_vendors == ()
    assert settings.start_date == dt.date(2026, 1, 1)
    assert settings.spark_mode == "local"
    assert settings.min_connections == 12
    assert settings.score_threshold == 0.7
    assert settings.profile == "default"


def test_spec_defaults_parse_to_the_dataclass_defaults():
    # Each default is written once, as text; `Settings()` and an empty environment must agree.
    assert load_settings({}) == Settings()


def test_every_settings_field_has_exactly_one_spec():
    attrs = [spec.attr for spec in SPECS]
    assert sorted(attrs) == sorted(f.name for f in dataclasses.fields(Settings))
    envs = [spec.env for spec in SPECS]
    assert len(set(envs)) == len(envs)
    # Our own knobs are BEACON_*; an Azure service's coordinates are named after the service.
    assert all(
        env.startswith(("BEACON_", "LOG_ANALYTICS_", "SYNAPSE_", "SENTINEL_")) for env in envs
    )


def test_load_settings_reads_os_environ_by_default(monkeypatch):
    for spec in SPECS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.setenv("BEACON_LOOKBACK_DAYS", "7")
    monkeypatch.setenv("BEACON_SOURCE", "export")
    settings = load_settings()
    assert settings.lookback_days == 7
    assert settings.source == "export"


def test_values_are_parsed():
    settings = load_settings(
        {
            "BEACON_SOURCE": "  Export ",
            "BEACON_LOOKBACK_DAYS": "90",
            "BEACON_START_DATE": " 2026-02-03 ",
            "BEACON_SPARK": "CLUSTER",
            "BEACON_SPARK_MASTER": " spark://host:7077 ",
            "BEACON_MIN_CONNECTIONS": "4",
            "BEACON_SCORE_THRESHOLD": "1",
            "BEACON_PROFILE": " Notebook ",
        }
    )
    assert settings.source == "export"
    assert settings.lookback_days == 90
    assert settings.start_date == dt.date(2026, 2, 3)
    assert settings.spark_mode == "cluster"
    assert settings.spark_master == "spark://host:7077"
    assert settings.min_connections == 4
    assert settings.score_threshold == 1.0
    assert settings.profile == "notebook"


# --- validators --------------------------------------------------------------------------------


def test_bad_source_is_rejected():
    message = error_of({"BEACON_SOURCE": "bogus"})
    assert "BEACON_SOURCE='bogus'" in message
    assert "must be one of sample, export, query" in message


def test_query_source_needs_a_workspace_id():
    message = error_of({"BEACON_SOURCE": "query"})
    assert "BEACON_SOURCE=query needs LOG_ANALYTICS_WORKSPACE_ID" in message
    settings = load_settings(
        {
            "BEACON_SOURCE": "query",
            "LOG_ANALYTICS_WORKSPACE_ID": "0A1B2C3D-0000-1111-2222-333344445555",
        }
    )
    assert settings.source == "query"
    assert settings.log_analytics_workspace_id == "0a1b2c3d-0000-1111-2222-333344445555"
    assert settings.log_analytics_endpoint == "https://api.loganalytics.io"
    assert settings.query_max_rows_per_slice == 400_000


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"LOG_ANALYTICS_WORKSPACE_ID": "sentinel-ws"}, "must be the workspace's Workspace ID"),
        ({"LOG_ANALYTICS_ENDPOINT": "http://api.loganalytics.io"}, "must be an https://"),
        ({"BEACON_QUERY_MAX_ROWS_PER_SLICE": "500001"}, "must be between 1 and 500000"),
    ],
)
def test_bad_query_settings_are_rejected(env, reason):
    message = error_of(env)
    assert next(iter(env)) in message
    assert reason in message


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0", "must be between 1 and 90"),
        ("91", "must be between 1 and 90"),
        ("-3", "must be between 1 and 90"),
        ("abc", "invalid literal for int()"),
        ("2.5", "invalid literal for int()"),
        ("", "invalid literal for int()"),
    ],
)
def test_bad_lookback_is_rejected(value, reason):
    message = error_of({"BEACON_LOOKBACK_DAYS": value})
    assert f"BEACON_LOOKBACK_DAYS={value!r}" in message
    assert reason in message


@pytest.mark.parametrize("value", ["1", "90"])
def test_lookback_bounds_are_inclusive(value):
    assert load_settings({"BEACON_LOOKBACK_DAYS": value}).lookback_days == int(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("10.0.0.0/8,fd00::/8", "fd00::/8: only IPv4 CIDRs can be configured"),
        ("2001:db8::/32", "only IPv4 CIDRs"),
        ("garbage", "does not appear to be an IPv4 or IPv6 network"),
        ("10.0.0.0/33", "10.0.0.0/33"),
        ("", "needs at least one CIDR"),
        (" , ,", "needs at least one CIDR"),
    ],
)
def test_bad_internal_networks_are_rejected(value, reason):
    message = error_of({"BEACON_INTERNAL_NETWORKS": value})
    assert "BEACON_INTERNAL_NETWORKS=" in message
    assert reason in message


def test_internal_networks_are_normalised():
    settings = load_settings({"BEACON_INTERNAL_NETWORKS": " 10.1.2.3/16 ,, 100.64.0.0/10 "})
    assert settings.internal_networks == ("10.1.0.0/16", "100.64.0.0/10")
    assert load_settings({"BEACON_INTERNAL_NETWORKS": RFC1918}) == load_settings({})


@pytest.mark.parametrize("variable", ["BEACON_EXPORT_URL", "BEACON_LAKE_URL"])
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://x", "must be a local path or a file://, abfss:// or az:// URL"),
        ("https://account.blob.core.windows.net/c", "must be a local path"),
        ("s3://bucket/export", "must be a local path"),
        ("./data/../etc", "must not contain '..'"),
        ("..", "must not contain '..'"),
        ("abfss://c@a.dfs.core.windows.net/x/../y", "must not contain '..'"),
        ("C:\\data\\..\\export", "must not contain '..'"),
    ],
)
def test_bad_urls_are_rejected(variable, value, reason):
    message = error_of({variable: value})
    assert f"{variable}={value!r}" in message
    assert reason in message


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("abfss://am-commonsecuritylog@acct.dfs.core.windows.net/", None),
        ("ABFSS://c@a.dfs.core.windows.net", None),
        ("az://container/export/", "az://container/export"),
        ("file:///var/export/", "file:///var/export"),
        ("/data/export/", "/data/export"),
        ("./x..y/z", "./x..y/z"),  # '..' only matters as a whole path component
        ("/", "/"),
    ],
)
def test_good_urls_are_accepted_without_trailing_slash(value, stored):
    expected = stored or value.rstrip("/")
    assert load_settings({"BEACON_EXPORT_URL": value}).export_url == expected
    # A remote lake needs Spark that can write it (local Spark is refused: test_adls.py).
    lake_env = {"BEACON_LAKE_URL": value, "BEACON_SPARK": "cluster"}
    assert load_settings(lake_env).lake_url == expected


def test_file_url_of_the_root_keeps_its_root():
    # BUG (settings.py, _url): `value.rstrip("/") or "/"` turns "file:///" into "file:", which
    # fsspec resolves to the current directory instead of "/". Only the bare "/" is protected.
    lake_url = load_settings({"BEACON_LAKE_URL": "file:///"}).lake_url
    assert fsspec.core.url_to_fs(lake_url)[1] == "/"


def test_workspace_resource_id_is_lower_cased_and_trimmed():
    settings = load_settings({"BEACON_WORKSPACE_RESOURCE_ID": f"  {WORKSPACE}/ "})
    assert settings.workspace_resource_id == WORKSPACE.lower()
    assert load_settings({"BEACON_WORKSPACE_RESOURCE_ID": "   "}).workspace_resource_id is None


@pytest.mark.parametrize(
    "value",
    [
        "sentinel-ws",
        "subscriptions/s/resourcegroups/r/providers/microsoft.operationalinsights/workspaces/w",
        "/subscriptions/s/resourcegroups/r/providers/microsoft.insights/workspaces/w",
        "/subscriptions/s/resourcegroups/r/providers/microsoft.operationalinsights/workspaces/",
        "/subscriptions/s/resourcegroups/r/providers/microsoft.operationalinsights/workspaces/w/x",
    ],
)
def test_malformed_workspace_resource_id_is_rejected(value):
    message = error_of({"BEACON_WORKSPACE_RESOURCE_ID": value})
    assert "BEACON_WORKSPACE_RESOURCE_ID=" in message
    assert "must look like /subscriptions/SUB/resourcegroups/RG" in message


def test_start_date_in_the_future_is_rejected():
    future = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=400)
    message = error_of({"BEACON_START_DATE": future.isoformat()})
    assert f"BEACON_START_DATE={future}: is in the future" in message


def test_start_date_in_the_past_is_accepted():
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert load_settings({"BEACON_START_DATE": yesterday.isoformat()}).start_date == yesterday


@pytest.mark.parametrize("value", ["2026-13-01", "yesterday", "01/02/2026"])
def test_malformed_start_date_is_rejected(value):
    message = error_of({"BEACON_START_DATE": value})
    assert f"BEACON_START_DATE={value!r}" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BEACON_SCORE_THRESHOLD", "1.5"),
        ("BEACON_SCORE_THRESHOLD", "nan"),
        ("BEACON_PROFILE", "rita"),
        ("BEACON_MAX_QUARANTINE_RATIO", "high"),
        ("BEACON_MIN_WINDOW_COVERAGE", "2"),
        ("BEACON_MIN_CONNECTIONS", "3"),
        ("BEACON_SPARK", "yarn"),
    ],
)
def test_other_bad_values_are_rejected(variable, value):
    message = error_of({variable: value})
    assert f"{variable}={value!r}" in message


def test_all_problems_are_reported_at_once():
    future = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=30)
    message = error_of(
        {
            "BEACON_SOURCE": "bogus",
            "BEACON_LOOKBACK_DAYS": "0",
            "BEACON_INTERNAL_NETWORKS": "fd00::/8",
            "BEACON_EXPORT_URL": "http://x",
            "BEACON_WORKSPACE_RESOURCE_ID": "nope",
            "BEACON_START_DATE": future.isoformat(),
        }
    )
    problems = message.splitlines()[1:]
    assert message.splitlines()[0] == "Invalid settings:"
    assert len(problems) == 6
    for variable in (
        "BEACON_SOURCE",
        "BEACON_LOOKBACK_DAYS",
        "BEACON_INTERNAL_NETWORKS",
        "BEACON_EXPORT_URL",
        "BEACON_WORKSPACE_RESOURCE_ID",
        "BEACON_START_DATE",
    ):
        assert sum(line.strip().startswith(variable) for line in problems) == 1, variable


def test_query_without_workspace_is_reported_with_other_problems():
    message = error_of({"BEACON_SOURCE": "query", "BEACON_LOOKBACK_DAYS": "91"})
    assert "BEACON_SOURCE=query needs LOG_ANALYTICS_WORKSPACE_ID" in message
    assert "BEACON_LOOKBACK_DAYS='91'" in message


def test_settings_error_is_a_value_error():
    assert issubclass(SettingsError, ValueError)


# --- vendors -----------------------------------------------------------------------------------


def test_vendor_list_is_trimmed_deduplicated_and_sorted():
    settings = load_settings({"BEACON_DEVICE_VENDORS": " Fortinet, Check Point ,,Fortinet , "})
    assert settings.device_vendors == ("Check Point", "Fortinet")


def test_empty_vendor_list_keeps_every_vendor():
    assert load_settings({"BEACON_DEVICE_VENDORS": " , "}).device_vendors == ()


# --- README table ------------------------------------------------------------------------------


def test_settings_table_lists_every_variable():
    table = settings_table_markdown()
    lines = table.splitlines()
    assert lines[:2] == ["| Variable | Default | Meaning |", "|---|---|---|"]
    assert len(lines) == len(SPECS) + 2
    for spec, line in zip(SPECS, lines[2:], strict=True):
        assert line.startswith(f"| `{spec.env}` | ")
        assert spec.doc in line


def test_settings_table_shows_defaults():
    table = settings_table_markdown()
    assert "| `BEACON_LOOKBACK_DAYS` | `21` |" in table
    assert "| `BEACON_WORKSPACE_RESOURCE_ID` | (empty) |" in table
    assert f"| `BEACON_INTERNAL_NETWORKS` | `{RFC1918}` |" in table
