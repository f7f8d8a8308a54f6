"""The admin's pictures: a run's timeline and paged steps, an asset's page, the asset graph.

``RunAdmin`` routes to these views (``assets.admin``); they only read. An asset name from a URL
is looked up in the registry and never used otherwise: an unknown one is a 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from django.core.paginator import Paginator
from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.http import Http404
from django.template.response import TemplateResponse

from assets.graph import asset_states, render_asset_graph
from assets.models import Materialization, Run
from assets.palette import STATUS_COLOURS
from assets.partition_health import newest_first, partition_health, partition_label
from assets.timeline import run_timeline
from flowstone.registry import get_registry
from flowstone.status import StepStatus

if TYPE_CHECKING:
    import uuid

    from django.contrib.admin import ModelAdmin
    from django.http import HttpRequest, HttpResponse

STEPS_PER_PAGE: Final = 100
"""Steps per page of a run's steps table."""

LATEST_MATERIALIZATIONS: Final = 20
"""How many of an asset's latest materializations its page lists."""

MAX_GRID_RANGES: Final = 2_000
"""The most ranges an asset's partition grid draws; the counts always cover every partition."""

LIVE_REFRESH_SECONDS: Final = 3
"""How often a live run's page fetches its timeline again."""

STEPS_PAGE_PARAMETER: Final = "steps_page"
STEPS_STATUS_PARAMETER: Final = "steps_status"


def steps_in_dag_order(run: Run) -> QuerySet[Materialization]:
    """A run's steps, upstream assets first (the registry's topological order), then by key."""
    order = get_registry().graph.order
    position = Case(
        *(When(asset=name, then=Value(index)) for index, name in enumerate(order)),
        default=Value(len(order)),
        output_field=IntegerField(),
    )
    return (
        Materialization.objects.filter(run=run)
        .only("asset", "partition_key", "status", "attempt", "started_at", "finished_at")
        # The error's message only: a failed step's error holds its whole traceback.
        .annotate(dag_position=position, error_message=KeyTextTransform("message", "error"))
        .order_by("dag_position", "partition_key", "pk")
    )


def run_page_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    """The timeline and one page of steps (``?steps_page=``, ``?steps_status=``) of a run."""
    steps = steps_in_dag_order(run)
    status = request.GET.get(STEPS_STATUS_PARAMETER, "")
    status_problem = ""
    statuses = [s.value for s in StepStatus]
    if status and status not in statuses:
        status_problem = f"There is no step status {status!r}; showing every step."
        status = ""
    if status:
        steps = steps.filter(status=status)
    page = Paginator(steps, STEPS_PER_PAGE).get_page(request.GET.get(STEPS_PAGE_PARAMETER))
    return {
        "steps": page.object_list,
        "steps_page": page,
        "steps_status": status,
        "steps_status_problem": status_problem,
        "step_statuses": statuses,
        **_timeline_context(run),
    }


def _timeline_context(run: Run) -> dict[str, Any]:
    return {
        "timeline": run_timeline(run),
        "palette": STATUS_COLOURS,
        "refresh_seconds": LIVE_REFRESH_SECONDS,
    }


def timeline_fragment(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The timeline of one run as an HTML fragment, which a live run's page fetches again."""
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise Http404("No run with that id.")
    context = {"run": run, **_timeline_context(run)}
    return TemplateResponse(request, "admin/assets/run/timeline.html", context)


def asset_page(request: HttpRequest, model_admin: ModelAdmin[Run], name: str) -> HttpResponse:
    """An asset's status, staleness, partition grid and latest materializations."""
    registry = get_registry()
    definition = registry.assets.get(name)
    if definition is None:
        raise Http404("No registered asset has that name.")
    health = partition_health(definition)
    latest = Materialization.objects.filter(asset=definition.name).order_by(*newest_first())[
        :LATEST_MATERIALIZATIONS
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": f"Asset {definition.name}",
        "definition": definition,
        "state": asset_states([definition.name])[definition.name],
        "upstreams": registry.graph.upstreams[definition.name],
        "downstreams": registry.graph.downstreams[definition.name],
        "health": health,
        "grid": health.ranges[:MAX_GRID_RANGES],
        "grid_is_cut": len(health.ranges) > MAX_GRID_RANGES,
        "max_grid_ranges": MAX_GRID_RANGES,
        "latest": [(step, partition_label(step.partition_key)) for step in latest],
        "palette": STATUS_COLOURS,
    }
    return TemplateResponse(request, "admin/assets/run/asset.html", context)


def graph_page(request: HttpRequest, model_admin: ModelAdmin[Run]) -> HttpResponse:
    """The asset graph with statuses (as text if Graphviz's ``dot`` is not installed)."""
    drawing = render_asset_graph()
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Asset graph",
        "svg": drawing.svg,
        "edges": drawing.edges,
        "states": drawing.states,
        "problem": drawing.problem,
        "palette": STATUS_COLOURS,
    }
    return TemplateResponse(request, "admin/assets/run/asset_graph.html", context)
