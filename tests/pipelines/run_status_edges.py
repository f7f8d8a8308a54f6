"""Run-status sensors at the edges: a long name, a run and notices for one event."""

from __future__ import annotations

from flowstone.scheduling import Notify, RunRequest, RunStatusEvent, run_status_sensor

LONG_NAME = "rs_flaky_failed_tell_the_on_call_team_" + "x" * 90  # 128 characters, the most


@run_status_sensor(status="failed", assets=["rs_flaky"], interval=1, name=LONG_NAME)
def long_named(event: RunStatusEvent) -> Notify:
    """A sensor whose name fills the name column (its notices' event is sensor:<name>)."""
    return Notify(text=f"run {event.run_id} failed")


@run_status_sensor(status="failed", assets=["rs_flaky"], interval=1)
def flaky_failed_both(event: RunStatusEvent) -> list[RunRequest | Notify]:
    """A follow-up run and two notices per failed run, all keyed by the event, as documented."""
    return [
        RunRequest(asset="rs_followup", run_key=event.run_key),
        Notify(title="to the team", text="failed"),
        Notify(title="to the on-call", text="failed"),
    ]
