"""The run-failure sensor: every failed run is summarised in the log (job, days, failed steps,
errors) and posted as JSON to BEACON_FAILURE_WEBHOOK_URL when that is set."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import Any

import dagster as dg

from pipeline.settings import Settings

WEBHOOK_TIMEOUT_S = 10


def failure_summary(
    run: dg.DagsterRun, message: str, step_errors: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """What an on-call engineer needs first: which job, which days, which step, which error."""
    tags = run.tags
    if "dagster/partition" in tags:
        days = tags["dagster/partition"]
    elif "dagster/asset_partition_range_start" in tags:
        days = (
            f"{tags['dagster/asset_partition_range_start']}..."
            f"{tags['dagster/asset_partition_range_end']}"
        )
    else:
        days = "(not partitioned)"
    steps = [{"step": step, "error": error} for step, error in step_errors]
    lines = [f"Dagster run {run.run_id} of job {run.job_name} FAILED (days {days})."]
    lines += [f"  step {s['step']}: {s['error']}" for s in steps]
    if not steps:
        lines.append(f"  {message}")
    if "dagster/backfill" in tags:
        lines.append(f"  part of backfill {tags['dagster/backfill']}")
    return {
        "text": "\n".join(lines),
        "run_id": run.run_id,
        "job": run.job_name,
        "days": days,
        "backfill": tags.get("dagster/backfill"),
        "failed_steps": steps,
        "message": message,
    }


def post_json(url: str, payload: dict[str, Any]) -> int:
    """POST `payload` as JSON; returns the HTTP status (raises on network or HTTP errors)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
        return response.status


def describe_error(error: Any) -> str:
    """`ErrorClass: first line` of the user's error under Dagster's step-execution wrapper."""
    while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
        error = error.cause
    lines = error.message.strip().splitlines()
    first = lines[0] if lines else ""
    # Python formats it as `module.ErrorClass: message`: keep the class name only.
    prefix, _, rest = first.partition(": ")
    if rest and prefix.rsplit(".", 1)[-1] == error.cls_name:
        first = rest
    return f"{error.cls_name}: {first}"


def build_failure_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.run_failure_sensor(
        name="run_failure_notifier",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Logs a summary of every failed run (job, days, failed steps and errors) and POSTs it "
            "as JSON to BEACON_FAILURE_WEBHOOK_URL when that is set."
        ),
    )
    def run_failure_notifier(context: dg.RunFailureSensorContext) -> None:
        step_errors = []
        for event in context.get_step_failure_events():
            error = event.event_specific_data.error
            text = describe_error(error) if error else event.message
            step_errors.append((event.step_key or "?", text or ""))
        summary = failure_summary(
            context.dagster_run, context.failure_event.message or "", step_errors
        )
        context.log.error(summary["text"])
        if settings.failure_webhook_url:
            try:
                status = post_json(settings.failure_webhook_url, summary)
                context.log.info(f"failure summary posted to the webhook (HTTP {status})")
            except OSError as error:  # urllib's URLError and HTTPError are OSErrors
                context.log.error(f"could not post the failure summary to the webhook: {error}")

    return run_failure_notifier
