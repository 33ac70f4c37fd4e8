"""`python -m pipeline doctor` against the fake Log Analytics and Synapse services, with the real
credential chain (stub `az`): each configured connection is tried and a failure names the fix."""

from __future__ import annotations

import datetime as dt

import pytest

from pipeline.azure.credentials import forget_credential
from pipeline.doctor import diagnose
from pipeline_tests.fakes.az_cli import token_for
from pipeline_tests.fakes.livy import running_livy
from pipeline_tests.fakes.log_analytics import (
    FakeLogAnalytics,
    common_security_log_columns,
    running_log_analytics,
)
from pipeline_tests.fakes.sentinel_arm import FakeSentinelArm, running_sentinel_arm

# Each test gets the identity of its own stub `az` (the credential is cached per process).
pytestmark = pytest.mark.usefixtures("fresh_credential")

WORKSPACE_ID = "3f2b6c1e-0a47-4b7e-9a51-5d0e1c2b7a10"
POOL = "doctorpool"
SUBSCRIPTION = "0a1b2c3d-0000-1111-2222-333344445555"


@pytest.fixture
def log_analytics(az_cli, test_ca):
    fake = FakeLogAnalytics(WORKSPACE_ID)
    now = dt.datetime.now(dt.UTC)
    row = {"TimeGenerated": now - dt.timedelta(minutes=5), "SourceIP": "10.0.0.1"}
    fake.add_table("CommonSecurityLog", common_security_log_columns(), [row])
    with running_log_analytics(test_ca, fake) as url:
        fake.expected_token = token_for(url)
        yield url, fake


def _findings(env: dict[str, str]) -> dict:
    return {f.check: f for f in diagnose(env)}


def test_log_analytics_is_queried_with_the_identity_in_use(log_analytics, az_cli, tmp_path):
    url, fake = log_analytics
    env = {
        "BEACON_LAKE_URL": str(tmp_path / "lake"),
        "LOG_ANALYTICS_WORKSPACE_ID": WORKSPACE_ID,
        "LOG_ANALYTICS_ENDPOINT": url,
    }
    found = _findings(env)["log analytics"]
    assert found.ok, found.detail
    assert found.detail.endswith("1 CommonSecurityLog rows in 1 h")
    assert len(fake.requests) >= 1

    az_cli.set_mode("error")
    forget_credential()
    failed = _findings(env)["log analytics"]
    assert not failed.ok
    assert "az login" in failed.detail
    assert "fake-token" not in failed.detail


def test_log_analytics_not_configured_is_reported_not_failed(tmp_path):
    found = _findings({"BEACON_LAKE_URL": str(tmp_path / "lake")})["log analytics"]
    assert found.ok and "not configured" in found.detail


def test_synapse_pool_is_reached_and_a_refused_token_names_the_role(
    az_cli, test_ca, azurite, tmp_path, monkeypatch
):
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    lake = "abfss://doctor@devstoreaccount1.dfs.core.windows.net/lake"
    with running_livy(test_ca, POOL, azurite.connection_string, tmp_path / "livy") as (url, state):
        env = {
            "BEACON_SOURCE": "export",
            "BEACON_EXPORT_URL": "abfss://am-commonsecuritylog@devstoreaccount1.dfs.core.windows.net/",
            "BEACON_LAKE_URL": lake,
            "BEACON_SPARK": "synapse",
            "SYNAPSE_WORKSPACE": "beaconws",
            "SYNAPSE_SPARK_POOL": POOL,
            "SYNAPSE_ENDPOINT": url,
        }
        found = _findings(env)["synapse"]
        assert found.ok, found.detail
        assert POOL in found.detail
        assert state.batches == {}, "the doctor must not submit anything"

        state.reject_tokens = True
        refused = _findings(env)["synapse"]
        assert not refused.ok
        assert "Synapse" in refused.detail


def test_sentinel_watchlist_is_read_and_a_missing_resource_group_is_named(
    az_cli, test_ca, tmp_path
):
    fake = FakeSentinelArm()
    fake.add_workspace(SUBSCRIPTION, "rg-security", "sentinel-ws")
    with running_sentinel_arm(test_ca, fake) as url:
        env = {
            "BEACON_LAKE_URL": str(tmp_path / "lake"),
            "SENTINEL_SUBSCRIPTION_ID": SUBSCRIPTION,
            "SENTINEL_RESOURCE_GROUP": "rg-security",
            "SENTINEL_WORKSPACE_NAME": "sentinel-ws",
            "SENTINEL_ARM_ENDPOINT": url,
        }
        found = _findings(env)["sentinel"]
        assert found.ok, found.detail
        assert "does not exist yet" in found.detail
        assert fake.watchlists == {}, "the doctor must not create the watchlist"

        wrong = _findings({**env, "SENTINEL_RESOURCE_GROUP": "rg-gone"})["sentinel"]
        assert not wrong.ok
        assert "rg-gone" in wrong.detail
