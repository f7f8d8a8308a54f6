"""How the API's list endpoints page: by cursor for the big tables, by page number for the rest.

Steps, materializations, runs and ticks grow without bound and are appended to while they are read,
so they page by cursor (``?cursor=``, opaque, from ``next``/``previous``): each page starts from the
last position (no ``OFFSET``), there is no ``COUNT(*)``, and a row inserted while a client pages
through never shifts or repeats another. An unfiltered page of steps, materializations or runs is an
index range; a filter the index does not lead with (``?status=``, ``?run_id=`` on materializations)
and ticks (ordered by ``tick_time``, which no index leads) scan further. Approvals and assets are
small (a human decides each approval; assets are defined in code), so they page by number
(``?page=``) with a ``count``. Every list takes ``?page_size=`` from 1 to ``MAX_PAGE_SIZE``;
anything else is a 400. ADR 0024 records the choice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from rest_framework import pagination
from rest_framework.exceptions import ValidationError

if TYPE_CHECKING:
    from rest_framework.request import Request

DEFAULT_PAGE_SIZE: Final = 100
"""Rows per page when the client does not ask for another ``page_size``."""
MAX_PAGE_SIZE: Final = 1000
"""The largest ``page_size`` a client may ask for."""
PAGE_SIZE_PARAM: Final = "page_size"


def _page_size(request: Request) -> int:
    """The ``page_size`` the request asks for; ``DEFAULT_PAGE_SIZE`` when absent, 400 if bad."""
    text = request.query_params.get(PAGE_SIZE_PARAM)
    if text is None:
        return DEFAULT_PAGE_SIZE
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_PAGE_SIZE):
        raise ValidationError({PAGE_SIZE_PARAM: [f"Must be an integer from 1 to {MAX_PAGE_SIZE}."]})
    return int(text)


class PageNumberPagination(pagination.PageNumberPagination):
    """``?page=`` and ``?page_size=``, with the total ``count``: for small collections."""

    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = PAGE_SIZE_PARAM
    page_size_query_description = f"Rows per page, from 1 to {MAX_PAGE_SIZE}."
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int:
        """The requested page size; a bad one is a 400 rather than silently the default."""
        return _page_size(request)


class CursorPagination(pagination.CursorPagination):
    """``?cursor=`` and ``?page_size=``, no count: for big tables that grow while read.

    Subclasses set ``ordering``; its first field is the position, so it must be indexed and
    (nearly) unique.
    """

    page_size = DEFAULT_PAGE_SIZE
    page_size_query_param = PAGE_SIZE_PARAM
    page_size_query_description = f"Rows per page, from 1 to {MAX_PAGE_SIZE}."
    max_page_size = MAX_PAGE_SIZE

    def get_page_size(self, request: Request) -> int:
        """The requested page size; a bad one is a 400 rather than silently the default."""
        return _page_size(request)


class StepPagination(CursorPagination):
    """A run's steps in the order they were planned (ascending id)."""

    ordering = "id"


class NewestFirstPagination(CursorPagination):
    """Materializations, newest first."""

    ordering = "-id"


class RunPagination(CursorPagination):
    """Runs, newest first."""

    ordering = ("-created_at", "-id")


class TickPagination(CursorPagination):
    """Ticks, newest tick time first."""

    ordering = ("-tick_time", "-id")


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "CursorPagination",
    "NewestFirstPagination",
    "PageNumberPagination",
    "RunPagination",
    "StepPagination",
    "TickPagination",
]
