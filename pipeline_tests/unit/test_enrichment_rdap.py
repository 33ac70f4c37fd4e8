"""RDAP lookups through the real `requests` client against the fake RDAP server over HTTPS:
answers, lake cache and its expiry, per-run limits, and failures that must not stop a run."""

import datetime as dt
import socket

import pandas as pd
import pytest

from pipeline.enrich import rdap
from pipeline_tests.fakes.rdap import RdapHandler, RdapState
from pipeline_tests.fakes.tls import serve_https

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
ADDRESSES = ["203.0.113.50", "198.51.100.77", "2001:db8:1::7", "10.20.0.5", "203.0.113.50"]


@pytest.fixture
def fake(test_ca, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(test_ca.bundle))
    state = RdapState()
    state.add("203.0.113.0/24", "DO-NET-1", "DigitalOcean, LLC", "2025-10-01")
    state.add("2001:db8::/32", "HETZNER-V6", "Hetzner Online GmbH", "2012-03-04")
    with serve_https(test_ca, RdapHandler, state) as url:
        yield state, url  # The fake serves /ip/ at its root (rdap.org-style base).


def run(lake_url, url, now=NOW, enabled=True, max_lookups=100, cache_days=30, addresses=None):
    client = rdap.RdapClient(url, rate_per_second=50) if enabled else None
    return rdap.enrich(
        ADDRESSES if addresses is None else addresses,
        lake_url,
        enabled=enabled,
        client=client,
        cache_days=cache_days,
        max_lookups=max_lookups,
        now=now,
    )


def test_lookup_parses_rfc9083_and_caches_in_the_lake(fake, tmp_path):
    state, url = fake
    lake_url = str(tmp_path / "lake")
    frame, report = run(lake_url, url)
    assert list(frame.columns) == list(rdap.WHOIS_COLUMNS)
    do = frame.loc["203.0.113.50"]
    assert do["whois_status"] == "ok"
    assert (do["whois_registrant"], do["whois_network"]) == ("DigitalOcean, LLC", "DO-NET-1")
    assert do["whois_cidr"] == "203.0.113.0 - 203.0.113.255"
    assert do["whois_allocated"] == pd.Timestamp("2025-10-01T13:30:00", tz="UTC")
    assert frame.loc["2001:db8:1::7", "whois_registrant"] == "Hetzner Online GmbH"
    assert frame.loc["198.51.100.77", "whois_status"] == "not found"
    assert frame.loc["10.20.0.5", "whois_status"] == "not public"  # never sent out
    assert sorted(state.requests) == [
        "/ip/198.51.100.77",
        "/ip/2001:db8:1::7",
        "/ip/203.0.113.50",
    ]
    assert (report.looked_up, report.found, report.not_found, report.cached) == (3, 2, 1, 0)
    cache = rdap.read_cache(lake_url)
    assert sorted(cache["ip"]) == ["198.51.100.77", "2001:db8:1::7", "203.0.113.50"]

    # Second run: every answer (also 'not found') comes from the cache, nothing is asked.
    again, report = run(lake_url, url, now=NOW + dt.timedelta(days=3))
    assert len(state.requests) == 3
    assert again.loc["203.0.113.50", "whois_status"] == "cached ok"
    assert again.loc["203.0.113.50", "whois_network"] == "DO-NET-1"
    assert again.loc["198.51.100.77", "whois_status"] == "cached not found"
    assert (report.looked_up, report.cached) == (0, 3)

    # With lookups off, cached answers still show; uncached ones say 'off'.
    off, report = run(lake_url, url, enabled=False, addresses=["203.0.113.50", "192.0.2.1"])
    assert off["whois_status"].tolist() == ["cached ok", "off"]
    assert report.status == "off" and len(state.requests) == 3


def test_expired_cache_entries_are_fetched_again(fake, tmp_path):
    state, url = fake
    lake_url = str(tmp_path / "lake")
    run(lake_url, url, addresses=["203.0.113.50"])
    state.add("203.0.113.0/24", "DO-NET-RENAMED", "DigitalOcean, LLC", "2025-10-01")
    frame, report = run(lake_url, url, now=NOW + dt.timedelta(days=31), addresses=["203.0.113.50"])
    assert state.requests == ["/ip/203.0.113.50", "/ip/203.0.113.50"]
    assert frame.loc["203.0.113.50", "whois_network"] == "DO-NET-RENAMED"
    assert report.looked_up == 1
    assert rdap.read_cache(lake_url)["whois_network"].tolist() == ["DO-NET-RENAMED"]


def test_lookup_limit_per_run(fake, tmp_path):
    state, url = fake
    frame, report = run(str(tmp_path / "lake"), url, max_lookups=1)
    assert len(state.requests) == 1
    assert frame["whois_status"].tolist() == [
        "ok",
        "skipped: lookup limit reached (1 per run)",
        "skipped: lookup limit reached (1 per run)",
        "not public",
    ]
    assert report.skipped == 2


def test_http_429_stops_lookups_and_nothing_is_cached(fake, tmp_path):
    state, url = fake
    state.force_status["*"] = 429
    lake_url = str(tmp_path / "lake")
    frame, report = run(lake_url, url)
    assert len(state.requests) == 1  # The registry asked us to slow down: we stop.
    assert frame.loc["203.0.113.50", "whois_status"] == "rate limited"
    assert frame.loc["198.51.100.77", "whois_status"] == "skipped: rate limited"
    assert report.stopped_because == "rate limited" and report.failed == 1
    assert rdap.read_cache(lake_url).empty


def test_http_500_is_recorded_per_ip_and_retried_next_run(fake, tmp_path):
    state, url = fake
    state.force_status["*"] = 500
    lake_url = str(tmp_path / "lake")
    frame, report = run(lake_url, url)
    assert set(frame["whois_status"]) == {"failed: HTTP 500", "not public"}
    assert report.failed == 3 and len(state.requests) == 3
    state.force_status.clear()
    frame, report = run(lake_url, url)
    assert frame.loc["203.0.113.50", "whois_status"] == "ok" and report.looked_up == 3


def test_no_network_leaves_a_reason_and_the_run_continues(tmp_path):
    with socket.socket() as probe:  # A port nobody listens on: connection refused.
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    frame, report = run(str(tmp_path / "lake"), f"https://127.0.0.1:{port}/registry")
    status = frame.loc["203.0.113.50", "whois_status"]
    assert status.startswith("no network: ") and "refused" in status.lower()
    assert frame.loc["198.51.100.77", "whois_status"] == f"skipped: {status}"
    assert report.looked_up == 1 and report.stopped_because == status


def test_a_day_without_candidates_gets_an_empty_whois_table(tmp_path):
    frame, report = run(str(tmp_path / "lake"), "https://127.0.0.1:9/registry", addresses=[])
    assert frame.empty and list(frame.columns) == list(rdap.WHOIS_COLUMNS)
    assert report.looked_up == 0


def test_rate_limit_spaces_requests():
    """The limiter waits out the interval between request starts (fake clock, no sleeping)."""
    now = [100.0]
    waits: list[float] = []

    class Session:
        def __init__(self) -> None:
            self.headers: dict = {}

        def get(self, url, timeout):
            raise rdap.requests.ConnectionError("down")

    client = rdap.RdapClient(
        "https://rdap.test",
        rate_per_second=2,
        session=Session(),  # type: ignore[arg-type]
        clock=lambda: now[0],
        sleep=lambda s: (waits.append(s), now.__setitem__(0, now[0] + s)),
    )
    client.lookup("203.0.113.1")
    client.lookup("203.0.113.2")
    assert waits == [pytest.approx(0.5)]
