"""Shared fixtures: one local Spark session for the whole test process, export-layout writers."""

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.ingest.export_layout import hour_folder, workspace_path
from pipeline.ingest.sample import DEFAULT_WORKSPACE
from pipeline.resources.spark import spark_config
from pipeline.settings import Settings


@pytest.fixture(scope="session")
def spark():
    """The one Spark session of the test process (the pipeline's resource reuses it)."""
    from pipeline.resources.spark import SparkJobRunner

    runner = SparkJobRunner(spark_config=spark_config(Settings(spark_master="local[2]")))
    return runner.spark_session


def record(ts: str, src: str = "10.0.0.5", dst: str = "203.0.113.9", **extra) -> dict:
    """A CommonSecurityLog record as the export writes it."""
    base = {
        "TimeGenerated": ts,
        "DeviceVendor": "Fortinet",
        "DeviceProduct": "Fortigate",
        "SourceIP": src,
        "SourcePort": 50000,
        "DestinationIP": dst,
        "DestinationPort": 443,
        "Protocol": "TCP",
        "SentBytes": 100,
        "ReceivedBytes": 200,
        "Type": "CommonSecurityLog",
    }
    base.update(extra)
    return base


def write_blob(
    root: Path,
    day: dt.date,
    hour: int,
    minute: int,
    lines: list,
    name: str = "PT05M.json",
    workspace: str = DEFAULT_WORKSPACE,
) -> Path:
    """Write one export blob; dict lines are JSON-encoded, str lines are written as they are."""
    folder = root / hour_folder(workspace_path(workspace), day, hour, minute)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """A throwaway CA; fake Azure servers serve HTTPS with certificates it signs."""
    from pipeline_tests.fakes.tls import make_ca

    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def az_cli(tmp_path, monkeypatch, test_ca):
    """The stub `az` first on PATH and the test CA trusted: DefaultAzureCredential's CLI step
    then yields tokens the fakes accept, with no other identity in the environment."""
    from pipeline_tests.fakes.az_cli import AzCli

    stub = AzCli(tmp_path / "az-cli")
    monkeypatch.setenv("PATH", stub.env()["PATH"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(test_ca.bundle))
    for name in ("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    return stub


@pytest.fixture
def fresh_credential():
    """Forget the process's cached Azure credential before and after a test."""
    from pipeline.azure.credentials import forget_credential

    forget_credential()
    yield
    forget_credential()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    """One Azurite blob server for the test session (started here, stopped at the end)."""
    from pipeline_tests.fakes.azurite import running_azurite

    with running_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server
