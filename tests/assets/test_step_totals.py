"""Step totals for /metrics: each finished run's steps are added once, and what a scrape reads
(totals plus the steps of runs not tallied yet) always equals grouping the whole step table.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections

import flowstone
from assets import services
from assets.models import Materialization, Run, StepTotals
from assets.services import totals
from tests.conftest import UseDefinitions


def _whole_table() -> dict[tuple[str, str], dict[str, float]]:
    return totals.step_figures(Materialization.objects.all())


def _rounded(figures: dict[tuple[str, str], dict[str, float]]) -> dict[object, object]:
    return {
        key: {name: round(value, 6) for name, value in sorted(row.items()) if value}
        for key, row in figures.items()
    }


@pytest.mark.django_db
@pytest.mark.embedded
def test_finished_runs_are_tallied_once_and_a_scrape_equals_the_whole_table(
    use_definitions: UseDefinitions,
) -> None:
    use_definitions("tests.pipelines.diagnosis")
    flowstone.materialize_all("d_downstream")  # failed and upstream-failed steps
    flowstone.materialize("d_flaky")  # a retried step
    going = flowstone.materialize_all_async("d_talks")  # no worker: stays unfinished

    first = totals.current_step_figures()

    assert _rounded(first) == _rounded(_whole_table())
    assert Run.objects.filter(metrics_tallied=True).count() == 2
    assert not Run.objects.get(pk=going.run_id).metrics_tallied
    assert _rounded(totals.current_step_figures()) == _rounded(first)  # a second scrape adds 0
    assert totals.tally_finished_runs() == 0
    services.cancel_run(going.run_id)  # it finishes: tallied by the next scrape
    flowstone.materialize_all("d_talks")
    assert _rounded(totals.current_step_figures()) == _rounded(_whole_table())
    assert not Run.objects.filter(metrics_tallied=False).exists()
    assert StepTotals.objects.filter(asset="d_flaky", status="success").get().figures["n"] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_processes_tallying_at_once_count_each_run_once(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.diagnosis")
    for _ in range(30):
        flowstone.materialize("d_flaky")
    barrier = threading.Barrier(4)
    counted: list[int] = []

    def tally() -> None:
        barrier.wait()
        try:
            counted.append(totals.tally_finished_runs(batch=3))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=tally) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counted) == 30
    assert _rounded(totals.current_step_figures()) == _rounded(_whole_table())
    assert connection.vendor == "postgresql"


@pytest.mark.django_db
@pytest.mark.embedded
def test_a_scrape_tallies_a_bounded_number_of_runs_and_counts_the_rest_directly(
    use_definitions: UseDefinitions, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_definitions("tests.pipelines.diagnosis")
    for _ in range(5):
        flowstone.materialize("d_flaky")
    monkeypatch.setattr(totals, "TALLY_PER_SCRAPE", 2)
    monkeypatch.setattr(totals, "TALLY_BATCH", 1)

    figures = totals.current_step_figures()

    assert Run.objects.filter(metrics_tallied=True).count() == 2  # the backlog waits
    assert _rounded(figures) == _rounded(_whole_table())  # and is counted all the same
