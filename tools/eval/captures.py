"""Real captures with known C2 (../shared/data/captures), converted to the export layout.

Zeek `conn.log` fields map to CommonSecurityLog: ts → TimeGenerated, id.orig_h → SourceIP,
id.resp_h → DestinationIP, id.resp_p → DestinationPort, proto → Protocol, orig_bytes →
SentBytes, resp_bytes → ReceivedBytes. The `#fields` line is parsed; no column position is
hard-coded. Timestamps keep their time of day and move to a fixed date, so relative timestamps
(seconds from 0) work too.
"""

import datetime as dt
import gzip
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pipeline.ingest.export_layout import hour_folder, workspace_path
from pipeline.ingest.sample import DEFAULT_WORKSPACE

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "captures"
BASE_DAY = dt.date(2026, 7, 1)
Pair = tuple[str, str, int, str]


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    description: str
    expected: tuple[tuple[Pair, str], ...]  # (pair, what to say if it is not reported)
    internal_networks: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


CASES: tuple[Case, ...] = (
    Case(
        "iot23-mirai",
        "iot23_CTU-IoT-Malware-Capture-34-1_conn.log.labeled.gz",
        "Stratosphere IoT-23 34-1, Mirai, 24 h; C2 retries are bursty (median gap 4 s)",
        (
            (
                ("192.168.1.195", "185.244.25.235", 6667, "TCP"),
                "impossible as a timer: retry bursts 2-7 s apart, bursts 33-100 s apart, "
                "52% of hours active (timing 0.69 on burst starts)",
            ),
        ),
    ),
    Case(
        "njrat",
        "ctu_botnet_230-1_njrat_first1000_conn.log.labeled.gz",
        "CTU-Malware-Capture-Botnet-230-1, NjRAT, 50 min (relative timestamps)",
        ((("192.168.1.115", "41.108.179.197", 1177, "TCP"), "every 9-17 s"),),
    ),
    Case(
        "cmu-sei-tutorial",
        "cmu_sei_beacon_huntress_tutorial_conn.json.gz",
        "cmu-sei Beacon Huntress tutorial (lab-simulated), 24 h",
        ((("8.8.8.1", "7.7.7.1", 80, "TCP"), "every ~300 s"),),
        internal_networks=("8.8.8.0/24",),
    ),
    Case(
        "remcos",
        "ctu_sme_11_remcos_first5000pkts_conn.log.labeled.gz",
        "CTU-SME-11, RemcosRAT, 8 min of refused retries every 0.5-1 s",
        (
            (
                ("192.168.1.107", "66.63.168.35", 5888, "TCP"),
                "impossible as a timer: a retry storm 0.5-1.5 s apart (timing 0.34) for 8 minutes",
            ),
        ),
    ),
    Case(
        "ctu-normal-40",
        "ctu_normal_40_day1_benign_conn.log.labeled.gz",
        "CTU-Normal-40, a benign Windows host, ~1 day: nothing should be high-confidence C2",
        (),
        internal_networks=("147.32.0.0/16",),
    ),
    Case(
        "ctu-normal-43",
        "ctu_normal_43_day1_benign_conn.log.labeled.gz",
        "CTU-Normal-43, a benign Windows host, ~1 day: nothing should be high-confidence C2",
        (),
        internal_networks=("147.32.0.0/16",),
    ),
)


def read_conn_log(path: Path) -> list[dict]:
    """Zeek conn.log rows (TSV with a #fields header, or JSON lines) as dicts."""
    rows = []
    with gzip.open(path, "rt") as handle:
        fields: list[str] = []
        for line in handle:
            if line.startswith("{"):
                rows.append(json.loads(line))
            elif line.startswith("#fields"):
                fields = line.rstrip("\n").split("\t")[1:]
            elif line.strip() and not line.startswith("#"):
                values = line.rstrip("\n").split("\t")
                rows.append(dict(zip(fields, values, strict=False)))
    return rows


def _number(value) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def write_export(case: Case, export_root: Path) -> tuple[dt.date, dt.date]:
    """Write the capture as export blobs; return the first and last day it covers."""
    rows = read_conn_log(DATA / case.file)
    times = [float(r["ts"]) for r in rows]
    origin = min(times) - min(times) % 86_400
    base = dt.datetime(BASE_DAY.year, BASE_DAY.month, BASE_DAY.day, tzinfo=dt.UTC).timestamp()
    folders: dict[tuple[dt.date, int, int], list[str]] = defaultdict(list)
    for row, ts in zip(rows, times, strict=True):
        moved = base + (ts - origin)
        when = dt.datetime.fromtimestamp(moved, dt.UTC)
        record = {
            "TimeGenerated": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "DeviceVendor": "Zeek",
            "SourceIP": row.get("id.orig_h") or row.get("id_orig_h"),
            "SourcePort": _number(row.get("id.orig_p", row.get("id_orig_p"))),
            "DestinationIP": row.get("id.resp_h") or row.get("id_resp_h"),
            "DestinationPort": _number(row.get("id.resp_p", row.get("id_resp_p"))),
            "Protocol": str(row.get("proto", "")).upper(),
            "SentBytes": _number(row.get("orig_bytes")),
            "ReceivedBytes": _number(row.get("resp_bytes")),
        }
        folders[(when.date(), when.hour, when.minute - when.minute % 5)].append(json.dumps(record))
    workspace = workspace_path(DEFAULT_WORKSPACE)
    for (day, hour, minute), lines in folders.items():
        folder = export_root / hour_folder(workspace, day, hour, minute)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "PT05M.json").write_text("\n".join(lines) + "\n")
    days = sorted({key[0] for key in folders})
    return days[0], days[-1]
