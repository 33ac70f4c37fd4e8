"""Unit tests of the export layout (pipeline.ingest.export_layout) and the sample traffic that
writes it (pipeline.ingest.sample), on the local filesystem under pytest's tmp_path. No Spark."""

from __future__ import annotations

import collections
import datetime as dt
import json
import re
from pathlib import Path

import pytest

from pipeline.ingest.export_layout import (
    LATE_ARRIVAL_HOURS,
    WORKSPACE_GLOB,
    ExportBlob,
    blobs_for_days,
    chunks,
    day_folder,
    describe_expected,
    hour_folder,
    layout_of,
    list_day_blobs,
    urls_for_chunk,
    workspace_path,
)
from pipeline.ingest.sample import (
    BEACONS,
    DEFAULT_WORKSPACE,
    SampleNetwork,
    write_export_day,
)

DAY = dt.date(2026, 3, 4)  # a Wednesday
WS_FOLDER = (
    "WorkspaceResourceId=/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/"
    "soc-rg/providers/microsoft.operationalinsights/workspaces/sentinel-ws"
)
# Enough hosts for all three sample beacons (hosts 7, 23 and 31), fewer bursts: small and fast.
SMALL = SampleNetwork(hosts=32, bursts_per_working_hour=1.0)
BLOB_PATH = re.compile(
    r"^WorkspaceResourceId=/subscriptions/[^/]+/resourcegroups/[^/]+/providers/"
    r"microsoft\.operationalinsights/workspaces/[^/]+/"
    r"y=(\d{4})/m=(\d{2})/d=(\d{2})/h=(\d{2})/m=(\d{2})/(PT05M|PT1H)(_\d+)?\.json$"
)
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")


def files_under(root: Path) -> dict[str, bytes]:
    """Every file below root, by path relative to root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def default_day(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """One day of the default sample network (what `make demo` reads), written once."""
    root = tmp_path_factory.mktemp("default-export")
    return root, write_export_day(root, DAY)


@pytest.fixture(scope="module")
def default_lines(default_day) -> list[str]:
    root, _ = default_day
    return [line for p in sorted(root.rglob("*.json")) for line in p.read_text().splitlines()]


# --- folder naming -----------------------------------------------------------------------------


def test_workspace_path_is_lower_case_under_the_export_root():
    assert workspace_path(DEFAULT_WORKSPACE) == WS_FOLDER
    assert workspace_path(DEFAULT_WORKSPACE.upper() + "/") == WS_FOLDER
    assert day_folder("W", DAY) == "W/y=2026/m=03/d=04"
    assert hour_folder("W", DAY, 7, 5) == "W/y=2026/m=03/d=04/h=07/m=05"


# --- write_export_day: 5-minute layout ---------------------------------------------------------


def test_five_minute_layout(default_day):
    root, written = default_day
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    folders = set()
    for path in files:
        match = BLOB_PATH.match(path)
        assert match, path
        year, month, day, hour, minute, stem, part = match.groups()
        assert path.startswith(WS_FOLDER + "/y=2026/m=03/d=04/")
        assert (year, month, day) == ("2026", "03", "04")
        assert 0 <= int(hour) < 24
        assert int(minute) % 5 == 0
        assert (stem, part) == ("PT05M", None)
        folders.add((hour, minute))
    # Every host polls NTP and telemetry all day: no 5-minute folder is empty.
    assert len(folders) == 288
    assert written["files"] == len(files) == 288
    assert written["bytes"] == sum((root / f).stat().st_size for f in files)
    assert written["records"] == sum(len((root / f).read_text().splitlines()) for f in files)


def test_writing_a_day_is_deterministic(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_export_day(first, DAY, SMALL)
    write_export_day(second, DAY, SMALL)
    before = files_under(first)
    assert len(before) == 288
    assert before == files_under(second)
    # Rewriting into the same root replaces the day with the same bytes.
    write_export_day(first, DAY, SMALL)
    assert files_under(first) == before


def test_rewriting_a_day_removes_stale_blobs(tmp_path):
    write_export_day(tmp_path, DAY, SMALL)
    stale = tmp_path / hour_folder(WS_FOLDER, DAY, 0, 0) / "PT05M_7.json"
    stale.write_text("{}\n")
    write_export_day(tmp_path, DAY, SMALL)
    assert not stale.exists()
    assert len(files_under(tmp_path)) == 288


def test_different_days_differ(tmp_path):
    write_export_day(tmp_path / "a", DAY, SMALL)
    write_export_day(tmp_path / "b", DAY + dt.timedelta(days=1), SMALL)
    a = b"".join(files_under(tmp_path / "a").values())
    b = b"".join(files_under(tmp_path / "b").values())
    assert a != b


# --- write_export_day: hourly layout and continuation blobs ------------------------------------


def test_hourly_layout(tmp_path):
    hourly, five = tmp_path / "hourly", tmp_path / "5min"
    written = write_export_day(hourly, DAY, SMALL, layout="hourly")
    write_export_day(five, DAY, SMALL)
    files = files_under(hourly)
    expected = {f"{hour_folder(WS_FOLDER, DAY, h, 0)}/PT1H.json" for h in range(24)}
    assert set(files) == expected
    assert written["files"] == 24
    # The same records, grouped by hour instead of by 5 minutes.
    hourly_lines = sorted(b"".join(files.values()).splitlines())
    five_lines = sorted(b"".join(files_under(five).values()).splitlines())
    assert hourly_lines == five_lines
    assert len(hourly_lines) == written["records"]
    blobs = list_day_blobs(str(hourly), DAY)
    assert [b.hour for b in blobs] == list(range(24))
    assert {layout_of(b.url) for b in blobs} == {"PT1H"}


def test_unknown_layout_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="layout must be 5min or hourly"):
        write_export_day(tmp_path, DAY, SMALL, layout="daily")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("layout", "stem"), [("5min", "PT05M"), ("hourly", "PT1H")])
def test_full_blobs_continue_in_numbered_blobs(tmp_path, layout, stem):
    limit = 40
    whole = write_export_day(tmp_path / "whole", DAY, SMALL, layout=layout)
    split = write_export_day(
        tmp_path / "split", DAY, SMALL, layout=layout, max_lines_per_blob=limit
    )
    assert split["records"] == whole["records"]
    assert split["bytes"] == whole["bytes"]
    assert split["files"] > whole["files"]
    names_per_folder = collections.defaultdict(list)
    lines_per_folder = collections.defaultdict(list)
    for path, data in sorted(files_under(tmp_path / "split").items()):
        folder, name = path.rsplit("/", 1)
        names_per_folder[folder].append(name)
        lines = data.decode().splitlines()
        assert 0 < len(lines) <= limit
        lines_per_folder[folder].append((name, lines))
    assert any(len(names) > 1 for names in names_per_folder.values())
    for folder, names in names_per_folder.items():
        # PT05M.json, PT05M_1.json, ... with no gap; only the last blob may be short.
        expected = [f"{stem}.json"] + [f"{stem}_{i}.json" for i in range(1, len(names))]
        assert sorted(names) == sorted(expected), folder
        parts = sorted(lines_per_folder[folder], key=lambda x: expected.index(x[0]))
        assert all(len(lines) == limit for _, lines in parts[:-1])
        # Concatenated in order, the parts are the unsplit blob.
        whole_blob = (tmp_path / "whole" / folder / f"{stem}.json").read_text().splitlines()
        assert [line for _, lines in parts for line in lines] == whole_blob
    blobs = list_day_blobs(str(tmp_path / "split"), DAY)
    assert len(blobs) == split["files"]
    assert {b.url for b in blobs} == {str(p) for p in (tmp_path / "split").rglob("*.json")}
    assert {layout_of(b.url) for b in blobs} == {stem}


# --- list_day_blobs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_days(tmp_path_factory) -> Path:
    """DAY and the day after, 5-minute layout, small network."""
    root = tmp_path_factory.mktemp("two-days")
    write_export_day(root, DAY, SMALL)
    write_export_day(root, DAY + dt.timedelta(days=1), SMALL)
    return root


def test_list_day_blobs_describes_every_blob_of_the_day(two_days):
    blobs = list_day_blobs(str(two_days), DAY)
    assert len(blobs) == 288
    assert [b.url for b in blobs] == sorted(b.url for b in blobs)
    for blob in blobs:
        path = Path(blob.url)
        assert path.is_file()
        assert blob.size == path.stat().st_size > 0
        assert blob.day == DAY
        assert f"/y=2026/m=03/d=04/h={blob.hour:02d}/" in blob.url
    assert collections.Counter(b.hour for b in blobs) == {h: 12 for h in range(24)}


def test_list_day_blobs_accepts_a_file_url(two_days):
    plain = list_day_blobs(str(two_days), DAY)
    via_url = list_day_blobs(two_days.as_uri() + "/", DAY)
    assert via_url == plain


def test_list_day_blobs_accepts_a_relative_path(two_days, monkeypatch):
    monkeypatch.chdir(two_days.parent)
    relative = list_day_blobs(f"./{two_days.name}", DAY)
    assert [b.url for b in relative] == [b.url for b in list_day_blobs(str(two_days), DAY)]


def test_list_day_blobs_filters_hours(two_days):
    blobs = list_day_blobs(str(two_days), DAY, hours=range(3, 5))
    assert len(blobs) == 24
    assert {b.hour for b in blobs} == {3, 4}


def test_list_day_blobs_of_a_missing_day_is_empty(two_days, tmp_path):
    assert list_day_blobs(str(two_days), DAY - dt.timedelta(days=1)) == []
    assert list_day_blobs(str(tmp_path / "nowhere"), DAY) == []


def test_list_day_blobs_ignores_files_that_are_not_export_blobs(tmp_path):
    write_export_day(tmp_path, DAY, SMALL)
    expected = {b.url for b in list_day_blobs(str(tmp_path), DAY)}
    folder = tmp_path / hour_folder(WS_FOLDER, DAY, 5, 10)
    day = tmp_path / day_folder(WS_FOLDER, DAY)
    decoys = [
        folder / "README.txt",
        folder / "foo.json",
        folder / "PT05M.json.tmp",
        folder / "PT05M_x.json",
        folder / "pt05m.json",
        folder / "PT5M.json",
        folder / "PT05M_1.jsonl",
        day / "PT05M.json",  # not in an h=/m= folder
        day / "h=05" / "PT05M.json",
        day / "h=05" / "misc" / "PT05M.json",
        tmp_path / "WorkspaceResourceId=" / "PT05M.json",
    ]
    for decoy in decoys:
        decoy.parent.mkdir(parents=True, exist_ok=True)
        decoy.write_text("{}\n")
    found = {b.url for b in list_day_blobs(str(tmp_path), DAY)}
    assert found == expected
    assert len(found) == 288


def test_blobs_for_days_adds_the_first_12_hours_of_the_next_day(two_days):
    per_day, late = blobs_for_days(str(two_days), [DAY])
    assert list(per_day) == [DAY]
    assert per_day[DAY] == list_day_blobs(str(two_days), DAY)
    next_day = DAY + dt.timedelta(days=1)
    assert LATE_ARRIVAL_HOURS == 12
    assert {b.day for b in late} == {next_day}
    assert {b.hour for b in late} == set(range(12))
    on_disk = {
        str(p)
        for p in (two_days / day_folder(WS_FOLDER, next_day)).rglob("*.json")
        if int(p.parent.parent.name.removeprefix("h=")) < 12
    }
    assert {b.url for b in late} == on_disk
    assert len(late) == 144


def test_blobs_for_days_takes_late_blobs_after_the_last_day_only(two_days):
    days = [DAY + dt.timedelta(days=1), DAY - dt.timedelta(days=1), DAY]
    per_day, late = blobs_for_days(str(two_days), days)
    assert set(per_day) == set(days)
    assert per_day[DAY - dt.timedelta(days=1)] == []
    assert len(per_day[DAY]) == len(per_day[DAY + dt.timedelta(days=1)]) == 288
    assert late == []  # nothing written for DAY + 2


def test_workspace_resource_id_picks_one_workspace(tmp_path):
    other = (
        "/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/Other-RG/providers/"
        "Microsoft.OperationalInsights/workspaces/Other-WS"
    )
    write_export_day(tmp_path, DAY, SMALL)
    write_export_day(tmp_path, DAY, SampleNetwork(hosts=32, workspace_resource_id=other))
    both = list_day_blobs(str(tmp_path), DAY)
    assert len(both) == 2 * 288
    only_other = list_day_blobs(str(tmp_path), DAY, other)
    assert len(only_other) == 288
    assert all("/workspaces/other-ws/" in b.url for b in only_other)
    only_default = list_day_blobs(str(tmp_path), DAY, DEFAULT_WORKSPACE)
    assert len(only_default) == 288
    assert all("/workspaces/sentinel-ws/" in b.url for b in only_default)
    assert {b.url for b in only_other} | {b.url for b in only_default} == {b.url for b in both}
    missing = DEFAULT_WORKSPACE.replace("sentinel-ws", "missing-ws")
    assert list_day_blobs(str(tmp_path), DAY, missing) == []
    per_day, late = blobs_for_days(str(tmp_path), [DAY], other.lower())
    assert per_day[DAY] == only_other
    assert late == []


# --- describe_expected / layout_of -------------------------------------------------------------


def test_describe_expected_names_the_day_folder():
    text = describe_expected("/data/export/", DAY, DEFAULT_WORKSPACE)
    assert text == f"/data/export/{WS_FOLDER}/y=2026/m=03/d=04/h=HH/m=MM/PT05M*.json or PT1H*.json"
    every = describe_expected("abfss://c@a.dfs.core.windows.net", DAY, None)
    assert every.startswith(f"abfss://c@a.dfs.core.windows.net/{WORKSPACE_GLOB}/y=2026/m=03/d=04/")


@pytest.mark.parametrize(
    ("url", "layout"),
    [
        ("/x/h=00/m=05/PT05M.json", "PT05M"),
        ("/x/h=00/m=05/PT05M_1.json", "PT05M"),
        ("abfss://c@a.dfs.core.windows.net/x/h=00/m=05/PT05M_12.json", "PT05M"),
        ("/x/h=00/m=00/PT1H.json", "PT1H"),
        ("/x/h=00/m=00/PT1H_3.json", "PT1H"),
        ("PT1H.json", "PT1H"),
        ("/x/foo.json", "unknown"),
        ("/x/PT05M.json.tmp", "unknown"),
        ("/x/PT05M_.json", "unknown"),
        ("/x/PT1H/readme.txt", "unknown"),
    ],
)
def test_layout_of(url, layout):
    assert layout_of(url) == layout


# --- sample content ----------------------------------------------------------------------------


def test_every_line_but_the_deliberate_malformed_ones_is_a_record(default_day, default_lines):
    _, written = default_day
    assert len(default_lines) == written["records"]
    malformed = []
    for line in default_lines:
        try:
            record = json.loads(line)
        except ValueError:
            malformed.append(line)
            continue
        if not isinstance(record.get("SentBytes"), int):
            malformed.append(line)
            continue
        assert STAMP.match(record["TimeGenerated"]), line
        assert record["Type"] == "CommonSecurityLog"
        assert record["DeviceVendor"] in ("Fortinet", "Check Point")
        assert isinstance(record["DestinationPort"], int)
        assert isinstance(record["ReceivedBytes"], int)
    assert len(malformed) == SampleNetwork().malformed_lines_per_day == 3
    assert any(line.startswith("<html>") for line in malformed)
    assert any(line.endswith('"Destinat') for line in malformed)  # cut mid-record
    assert any('"SentBytes":"abc"' in line for line in malformed)


def test_records_are_appended_after_they_are_generated(default_day):
    root, written = default_day
    start = dt.datetime(DAY.year, DAY.month, DAY.day, tzinfo=dt.UTC)
    checked = previous_day = 0
    for path in root.rglob("*.json"):
        hour = int(path.parent.parent.name.removeprefix("h="))
        minute = int(path.parent.name.removeprefix("m="))
        folder_end = start + dt.timedelta(hours=hour, minutes=minute + 5)
        for line in path.read_text().splitlines():
            if not line.startswith('{"TenantId"'):
                continue  # the deliberate malformed lines
            stamp = json.loads(line)["TimeGenerated"]
            generated = dt.datetime.fromisoformat(stamp[:26] + "+00:00")
            assert start - dt.timedelta(days=1) <= generated < folder_end, (path, stamp)
            checked += 1
            previous_day += generated < start
    assert checked == written["records"] - 3
    # Late arrivals and export retries of yesterday's records land in today's folders.
    assert previous_day > 0


def test_sample_beacons_appear_as_pairs(default_lines):
    network = SampleNetwork()
    times = collections.defaultdict(set)
    for line in default_lines:
        if not line.startswith('{"TenantId"'):
            continue
        record = json.loads(line)
        key = (record["SourceIP"], record["DestinationIP"], record["DestinationPort"])
        times[key].add(record["TimeGenerated"])
    for beacon in BEACONS:
        key = (network.host_ip(beacon.host), beacon.destination, beacon.port)
        mean_gap = {
            "cobalt": beacon.sleep_s * (1 - beacon.jitter / 2),
            "empire": beacon.sleep_s,
            "sliver": beacon.sleep_s + beacon.jitter / 2,
            "exact": beacon.sleep_s,
        }[beacon.model]
        expected = 86_400 / mean_gap
        assert abs(len(times[key]) - expected) <= max(2, 0.1 * expected), (beacon.name, key)
    # The beacons' destinations are reached by their own host only.
    for beacon in BEACONS:
        sources = {
            src for src, dst, port in times if (dst, port) == (beacon.destination, beacon.port)
        }
        assert sources == {network.host_ip(beacon.host)}


def test_sample_pollers_are_prevalent(default_lines):
    sources = collections.defaultdict(set)
    for line in default_lines:
        if line.startswith('{"TenantId"'):
            record = json.loads(line)
            sources[record["DestinationIP"]].add(record["SourceIP"])
    for poller in ("162.159.200.1", "20.42.65.92", "13.107.4.50"):
        assert len(sources[poller]) == SampleNetwork().hosts


def test_no_malformed_lines_when_none_are_asked_for(tmp_path):
    network = SampleNetwork(hosts=32, bursts_per_working_hour=1.0, malformed_lines_per_day=0)
    written = write_export_day(tmp_path, DAY, network)
    lines = [line for p in tmp_path.rglob("*.json") for line in p.read_text().splitlines()]
    assert len(lines) == written["records"]
    assert all(STAMP.match(json.loads(line)["TimeGenerated"]) for line in lines)


def _blob(day: dt.date, hour: int) -> ExportBlob:
    return ExportBlob(url=f"{day.isoformat()}/h={hour:02d}", size=1, day=day, hour=hour)


def test_a_range_is_read_in_passes_that_each_see_the_next_days_first_hours():
    days = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(5)]
    per_day = {d: [_blob(d, 0), _blob(d, 11), _blob(d, 12), _blob(d, 23)] for d in days}
    after = dt.date(2026, 3, 6)
    late = [_blob(after, 0), _blob(after, 11)]

    passes = chunks(days, 3)
    assert passes == [days[:3], days[3:]]
    first = urls_for_chunk(passes[0], per_day, late)
    # Its own days whole, then the following day's hours 0-11 (late records), taken from the
    # run's listing; never the following day's afternoon.
    assert first == [b.url for d in days[:3] for b in per_day[d]] + [
        "2026-03-04/h=00",
        "2026-03-04/h=11",
    ]
    assert urls_for_chunk(passes[1], per_day, late) == [
        b.url for d in days[3:] for b in per_day[d]
    ] + [b.url for b in late]
