"""`make eval`: run the real pipeline on labeled data and print precision and recall.

Datasets: the labeled 21-day scenario network (`scenarios.py`) and the real captures in
../shared/data/captures, converted to the export layout here. Each runs through the same Dagster
assets, Spark jobs and default settings a user runs; the notebook's query (as shipped and with
its grouping fixed) runs on the same sessions for comparison.
"""

import argparse
import dataclasses
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from pipeline.definitions import build_definitions
from pipeline.detect import notebook_query
from pipeline.enrich.enrich import popular_destination
from pipeline.ingest.sample import write_export_day
from pipeline.lake import Lake
from pipeline.resources.spark import SparkJobRunner, spark_config
from pipeline.settings import load_settings
from tools.eval import captures, held_out
from tools.eval.scenarios import DAYS, FIRST_DAY, ScenarioNetwork

KEY = ["SourceIP", "DestinationIP", "DestinationPort", "Protocol"]


INGEST = dg.AssetSelection.assets(
    "commonsecuritylog_export", "network_sessions", "pair_daily_stats"
)


def run_pipeline(
    export_url: str,
    lake_url: str,
    first: dt.date,
    last: dt.date,
    last_day_only: bool = False,
    **overrides,
) -> pd.DataFrame:
    """Materialize every asset for first…last in one run (or, with `last_day_only`, ingest
    first…last and the rest for the last day alone); return the last day's candidates."""
    settings = dataclasses.replace(
        load_settings({}),
        **overrides,
        source="export",
        export_url=export_url,
        lake_url=lake_url,
        start_date=first,
        spark_master="local[2]",
    )
    defs = build_definitions(settings)
    resources = {"spark": SparkJobRunner(spark_config=spark_config(settings))}
    days = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    if last_day_only:
        runs = [(INGEST, days), (dg.AssetSelection.all() - INGEST, None)]
    else:
        runs = [(dg.AssetSelection.all(), days)]
    for selection, tags in runs:
        result = dg.materialize(
            list(defs.assets),
            selection=selection,
            resources=resources,
            tags=tags,
            partition_key=None if tags else last.isoformat(),
            raise_on_error=True,
        )
        assert result.success
    # What is reported is enriched_beacons (beaconing_candidates less the pairs to
    # destinations most hosts reach, unless new or named by threat intel).
    return read_day(lake_url, "enriched_beacons", last)


def read_day(lake_url: str, table: str, day: dt.date) -> pd.DataFrame:
    path = Lake(lake_url).day_url(table, day)
    return pd.read_parquet(path) if Path(path).exists() else pd.DataFrame(columns=KEY)


def notebook_pairs(lake_url: str, first: dt.date, last: dt.date, fixed: bool) -> pd.DataFrame:
    runner = SparkJobRunner(spark_config=spark_config(load_settings({})))
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    frame = notebook_query.run(
        runner.spark_session, lake_url=lake_url, days=days, fixed=fixed, device_vendor=None
    ).toPandas()
    return frame if not frame.empty else pd.DataFrame(columns=KEY)


def keys(frame: pd.DataFrame) -> set[tuple]:
    return {
        (r.SourceIP, r.DestinationIP, int(r.DestinationPort), r.Protocol)
        for r in frame[KEY].itertuples(index=False)
    }


def row_keys(frame: pd.DataFrame) -> list[set[tuple]]:
    """Per reported row, every key a label can have for it: its pair, each address of a beacon
    scored by host name, and the name itself."""
    out = []
    for r in frame.itertuples(index=False):
        port = int(r.DestinationPort)
        found = {(r.SourceIP, r.DestinationIP, port, r.Protocol)}
        ips = getattr(r, "destination_ips", None)
        if ips is not None and len(ips) > 1:
            found |= {(r.SourceIP, str(ip), port, r.Protocol) for ip in ips}
            found.add((r.SourceIP, r.destination_hostname, port, r.Protocol))
        out.append(found)
    return out


def found_keys(frame: pd.DataFrame) -> set[tuple]:
    rows = row_keys(frame)
    return set().union(*rows) if rows else set()


def score_against(labels: pd.DataFrame, reported: pd.DataFrame) -> dict:
    """Recall per C2 profile; precision with rare benign pollers set aside (not errors). A
    reported row is true when one of its keys (`row_keys`) is a C2 label's."""
    c2 = labels[labels.label == "c2"]
    benign_periodic = keys(labels[labels.label == "benign_periodic"])
    rows = row_keys(reported)
    found = set().union(*rows) if rows else set()
    per_profile = {}
    for profile, group in c2.groupby("profile", sort=False):
        pairs = keys(group)
        per_profile[profile] = len(pairs & found) / len(pairs)
    c2_keys = keys(c2)
    primary = keys_list(reported)
    judged = [i for i, k in enumerate(rows) if not k & benign_periodic]
    true = [i for i in judged if rows[i] & c2_keys]
    false = [i for i in judged if not rows[i] & c2_keys]
    return {
        "per_profile": per_profile,
        "recall": len(found & c2_keys) / len(c2_keys),
        "precision": len(true) / len(judged) if judged else float("nan"),
        "reported": len(rows),
        "true_rows": true,
        "false_rows": false,
        "false_positives": sorted(primary[i] for i in false),
        "benign_periodic_reported": sorted(found & benign_periodic),
    }


def scenario(workdir: Path) -> None:
    network = ScenarioNetwork()
    export = workdir / "scenario" / "export"
    lake_url = str(workdir / "scenario" / "lake")
    first, last = FIRST_DAY, FIRST_DAY + dt.timedelta(days=DAYS - 1)
    started = time.monotonic()
    for i in range(DAYS + 1):
        write_export_day(export, first + dt.timedelta(days=i), network)
    print(
        f"scenario: {network.hosts} hosts, {DAYS} days written "
        f"in {time.monotonic() - started:.0f} s"
    )
    started = time.monotonic()
    ours = run_pipeline(str(export), lake_url, first, last)
    print(f"pipeline ran in {time.monotonic() - started:.0f} s\n")
    labels = pd.DataFrame(network.labels())
    results = {
        "ours": score_against(labels, ours),
        "notebook as shipped": score_against(labels, notebook_pairs(lake_url, first, last, False)),
        "notebook, grouping fixed": score_against(
            labels, notebook_pairs(lake_url, first, last, True)
        ),
    }
    rows = []
    for profile in labels[labels.label == "c2"].profile.unique():
        rows.append(
            {"profile": profile, **{name: r["per_profile"][profile] for name, r in results.items()}}
        )
    table = pd.DataFrame(rows)
    print(f"Scenario network, day {last} (21-day window): recall per C2 profile")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print()
    for name, r in results.items():
        print(
            f"{name:>26}: recall {r['recall']:.2f}  precision {r['precision']:.2f}  "
            f"reported {r['reported']}  false positives {len(r['false_positives'])}  "
            f"rare benign pollers reported {len(r['benign_periodic_reported'])}"
        )
        for fp in r["false_positives"][:10]:
            print(f"{'':>28}false positive: {fp}")
    flagged = (
        ours[ours.reasons.str.contains("share this timer", na=False)] if not ours.empty else ours
    )
    if len(flagged):
        print(f"\n{len(flagged)} reported pairs note a timer several hosts share")
    print()


def held_out_runs(workdir: Path, seeds: tuple[int, ...]) -> None:
    """Networks drawn at random per seed (`held_out.py`): recall by class of C2, precision, and
    the score margin between the lowest reported true beacon and the highest false one."""
    rows, totals = [], []
    for seed in seeds:
        network = held_out.draw_network(seed)
        export = workdir / f"held_out_{seed}" / "export"
        lake_url = str(workdir / f"held_out_{seed}" / "lake")
        first = network.first_day
        last = first + dt.timedelta(days=network.days - 1)
        write_export_once(export, network)
        shutil.rmtree(lake_url, ignore_errors=True)
        ours = run_pipeline(str(export), lake_url, first, last, last_day_only=True)
        labels = pd.DataFrame(network.labels())
        result = score_against(labels, ours)
        true_scores = [float(ours.score.iloc[i]) for i in result["true_rows"]]
        false_scores = [float(ours.score.iloc[i]) for i in result["false_rows"]]
        margin = (min(true_scores) if true_scores else float("nan")) - (
            max(false_scores) if false_scores else params_threshold()
        )
        totals.append(
            dict(
                seed=seed,
                hosts=network.hosts,
                profiles=len(result["per_profile"]),
                recall=result["recall"],
                profile_recall=float(np.mean(list(result["per_profile"].values()))),
                precision=result["precision"],
                true=len(true_scores),
                false=len(false_scores),
                margin=margin,
            )
        )
        implants = {implant.profile: implant for implant in network.implants}
        for profile, recall in result["per_profile"].items():
            cls = held_out.c2_class(implants[profile])
            rows.append(dict(seed=seed, profile=profile, cls=cls, recall=recall))
        # Profiles the popularity rule holds back: found as candidates, to a destination more
        # than half of the hosts reach, so by design not reported (issue 14's rule).
        candidates = read_day(lake_url, "beaconing_candidates", last)
        popular = candidates[popular_destination(candidates)] if len(candidates) else None
        popular_keys = set().union(*row_keys(popular)) if popular is not None else set()
        c2 = labels[labels.label == "c2"]
        by_rule = {
            profile
            for profile, group in c2.groupby("profile", sort=False)
            if result["per_profile"][profile] < 1 and keys(group) <= popular_keys | found_keys(ours)
        }
        within = [r for p, r in result["per_profile"].items() if p not in by_rule]
        totals[-1]["profile_recall_within_rule"] = float(np.mean(within)) if within else np.nan
        totals[-1]["held_back_profiles"] = len(by_rule)
        print(f"\nseed {seed}: {network.hosts} hosts, {len(result['per_profile'])} C2 profiles")
        for profile, recall in result["per_profile"].items():
            if recall < 1:
                why = " held back: most hosts reach the destination" if profile in by_rule else ""
                print(f"  missed: {profile} (recall {recall:.2f}){why}")
        for i in result["false_rows"][:10]:
            row = ours.iloc[i]
            print(f"  false positive {keys_list(ours)[i]}: score {row.score:.2f}: {row.reasons}")
        reported_popular = int(popular_destination(ours).sum()) if len(ours) else 0
        held_back = len(candidates) - len(ours)
        print(
            f"  reported to a destination more than half of the hosts reach: {reported_popular}"
            f" (held back from the candidates: {held_back})"
        )
        totals[-1]["popular_reported"] = reported_popular
    table = pd.DataFrame(rows)
    print("\nHeld-out networks: recall by class of C2 (pairs found / pairs, over every seed)")
    by_class = table.groupby("cls").recall.agg(["mean", "count"]).reset_index()
    print(by_class.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print()
    print(pd.DataFrame(totals).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def write_export_once(export: Path, network: held_out.ScenarioNetwork) -> None:
    """Write the network's export days (and the next, for late records), unless a kept folder
    (`--keep`) already holds those of this very network."""
    stamp = export.parent / "network.txt"
    if stamp.exists() and stamp.read_text() == repr(network):
        return
    shutil.rmtree(export, ignore_errors=True)
    for i in range(network.days + 1):
        write_export_day(export, network.first_day + dt.timedelta(days=i), network)
    stamp.write_text(repr(network))


def params_threshold() -> float:
    """The score threshold at default settings (the margin's floor when nothing false is
    reported)."""
    return load_settings({}).score_threshold


def capture_runs(workdir: Path) -> None:
    print("Real captures (../shared/data/captures), converted to the export layout")
    for case in captures.CASES:
        export = workdir / case.name / "export"
        lake_url = str(workdir / case.name / "lake")
        first, last = captures.write_export(case, export)
        found = run_pipeline(
            str(export), lake_url, first, last, internal_networks=case.internal_networks
        )
        reported = keys(found)
        print(f"\n{case.name}: {case.description}")
        for pair, note in case.expected:
            hit = pair in reported
            row = (
                found[
                    (found.SourceIP == pair[0])
                    & (found.DestinationIP == pair[1])
                    & (found.DestinationPort == pair[2])
                ]
                if not found.empty
                else found
            )
            detail = f"score {row.score.iloc[0]:.2f}: {row.reasons.iloc[0]}" if len(row) else note
            print(f"  expected {pair}: {'REPORTED' if hit else 'not reported'} ({detail})")
        others = (
            found[[k not in {p for p, _ in case.expected} for k in keys_list(found)]]
            if not found.empty
            else found
        )
        high = others[others.score >= 0.9] if not others.empty else others
        print(f"  other reported pairs: {len(others)}, of which score >= 0.9: {len(high)}")
        for row in high.head(5).itertuples(index=False):
            print(
                f"    {row.SourceIP} -> {row.DestinationIP}:{row.DestinationPort} "
                f"score {row.score:.2f}: {row.reasons}"
            )


def keys_list(frame: pd.DataFrame) -> list[tuple]:
    return [
        (r.SourceIP, r.DestinationIP, int(r.DestinationPort), r.Protocol)
        for r in frame[KEY].itertuples(index=False)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.eval")
    parser.add_argument("--keep", help="work in this folder and keep it")
    parser.add_argument("--only", choices=["scenario", "captures", "held-out"])
    parser.add_argument(
        "--seeds",
        default=",".join(map(str, held_out.REPORT_SEEDS)),
        help="held-out seeds (comma-separated); tune on held_out.TUNING_SEEDS, report on others",
    )
    args = parser.parse_args()
    workdir = Path(args.keep or tempfile.mkdtemp(prefix="beacon-eval-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.only in (None, "scenario"):
            scenario(workdir)
        if args.only in (None, "held-out"):
            held_out_runs(workdir, tuple(int(s) for s in args.seeds.split(",")))
        if args.only in (None, "captures"):
            capture_runs(workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
