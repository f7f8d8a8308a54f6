"""The security index: each threat, and the tests (here and elsewhere) that show it is handled.

``test_every_reference_exists`` keeps the index honest: every ``path::test`` named below must be
a test function in that file, and every test in ``tests/security/`` must be named by a threat.
The fault suite (``tests/faults/``, marker ``fault``) covers lost and doubled work separately.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

TESTS: Final = Path(__file__).resolve().parents[1]

THREATS: Final[dict[str, tuple[str, ...]]] = {
    "unsafe deserialization: pickle or YAML task bodies are refused, recorded, never executed": (
        "security/test_messages.py::test_pickle_and_yaml_messages_are_refused_recorded_and_never_executed",
        "assets/test_celery_execution.py::test_hostile_messages_are_rejected_recorded_and_the_worker_keeps_serving",
        "flowstone/test_celery_checks.py::test_shipped_settings_are_safe",
        "flowstone/test_celery_checks.py::test_w001_pickle_accepted",
        "flowstone/test_celery_checks.py::test_w001_pickle_serializer",
    ),
    "hostile identifiers in task payloads (asset, run id, partition): recorded, nothing resolved": (
        "security/test_messages.py::test_hostile_identifiers_in_payloads_are_recorded_and_resolve_nothing",
        "security/test_messages.py::test_positional_arguments_are_refused",
        "assets/test_celery_execution.py::test_hostile_messages_are_rejected_recorded_and_the_worker_keeps_serving",
    ),
    "oversized task payloads: refused, recorded truncated, the worker keeps serving": (
        "security/test_messages.py::test_an_oversized_task_payload_is_refused_and_recorded_truncated",
    ),
    "poison messages (not JSON, not an envelope, unreadable headers or body): recorded, dropped, "
    "the worker keeps serving": (
        "security/test_poison.py::test_malformed_redis_items_are_recorded_dropped_and_the_worker_goes_on",
        "security/test_poison.py::test_malformed_rabbitmq_messages_are_recorded_dropped_and_the_worker_goes_on",
    ),
    "hostile asset names (API bodies, URLs, lineage, commands): unknown, nothing imported": (
        "security/test_api.py::test_hostile_asset_names_are_unknown_assets_and_import_nothing",
        "security/test_api.py::test_hostile_asset_names_in_urls_are_404",
        "security/test_commands.py::test_hostile_asset_names_are_unknown_assets",
        "api/test_endpoints.py::test_invalid_input_is_a_400_with_field_errors_and_unknown_assets_404",
    ),
    "hostile partitions and partition keys (API, lineage, commands, file names)": (
        "security/test_api.py::test_hostile_partitions_are_refused_before_a_run_exists",
        "security/test_api.py::test_hostile_partition_keys_are_refused_by_runs_and_lineage",
        "security/test_commands.py::test_hostile_partition_keys_are_refused",
        "flowstone/test_io.py::test_file_stems_are_injective_and_safe",
    ),
    "a NUL byte in a materializations filter is refused with a 400": (
        "security/test_api.py::test_nul_bytes_in_materialization_filters_are_a_400",
    ),
    "SQL injection through IO manager table, schema and column names": (
        "flowstone/io/test_postgres.py::test_hostile_table_names_are_refused_before_any_sql",
        "flowstone/io/test_postgres.py::test_hostile_manager_table_is_refused_when_configured",
        "flowstone/io/test_postgres.py::test_hostile_column_names_in_rows_are_refused_before_any_sql",
        "flowstone/io/test_postgres.py::test_run_time_io_overrides_are_checked_before_any_sql",
        "flowstone/test_checks.py::test_e009_hostile_table_name",
    ),
    "oversized API bodies and fields: 400/413, never a 500, nothing started": (
        "security/test_api.py::test_a_10_mb_json_body_is_refused_cleanly_not_a_server_error",
        "security/test_api.py::test_a_10_mb_decision_body_is_refused_cleanly",
        "security/test_api.py::test_oversized_fields_under_the_body_limit_are_field_errors",
    ),
    "any API input answered with a server error (schema-driven fuzzing)": (
        "api/test_fuzz.py::test_every_operation_answers_only_documented_responses",
        "api/test_fuzz.py::test_no_operation_answers_bad_input_with_an_undocumented_status",
    ),
    "unauthenticated API calls": (
        "api/test_endpoints.py::test_anonymous_is_refused_everywhere",
        "api/test_endpoints.py::test_token_authentication",
        "security/test_api.py::test_unauthenticated_calls_are_refused_on_every_remaining_endpoint",
        "security/test_api.py::test_a_wrong_or_malformed_token_is_refused",
    ),
    "unauthorized API calls (permissions, other users' runs)": (
        "api/test_endpoints.py::test_starting_runs_needs_the_add_permission",
        "api/test_endpoints.py::test_cancel_needs_the_change_permission",
        "api/test_endpoints.py::test_run_lists_are_filtered_to_what_the_user_may_see",
        "approvals/test_console.py::test_api_refusals",
        "security/test_api.py::test_users_see_and_touch_only_their_own_runs",
    ),
    "unauthenticated and unauthorized admin calls": (
        "security/test_admin.py::test_anonymous_admin_requests_go_to_the_login_page",
        "security/test_admin.py::test_users_without_the_staff_flag_cannot_use_the_admin",
        "security/test_admin.py::test_staff_without_model_permissions_see_nothing",
        "approvals/test_console.py::test_admin_refuses_users_without_the_permission",
        "assets/test_admin.py::test_asset_graph_needs_the_view_permission",
    ),
    "self-approval (admin form, bulk action, API, service)": (
        "approvals/test_console.py::test_admin_refuses_the_requester_themself",
        "security/test_admin.py::test_the_bulk_approve_action_refuses_self_approval",
        "approvals/test_console.py::test_api_refusals",
        "approvals/test_services.py::test_the_requester_may_not_approve_their_own_run",
    ),
    "CSRF on admin actions and session-authenticated API writes": (
        "approvals/test_console.py::test_admin_decisions_need_csrf",
        "security/test_admin.py::test_the_bulk_approve_action_needs_csrf",
        "security/test_api.py::test_session_authenticated_api_writes_need_the_csrf_token",
    ),
}


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def test_every_reference_exists() -> None:
    missing = []
    for threat, references in THREATS.items():
        assert references, threat
        for reference in references:
            path, name = reference.split("::")
            if name not in _test_functions(TESTS / path):
                missing.append(reference)
    assert not missing


def test_every_security_test_is_indexed() -> None:
    indexed = {ref for refs in THREATS.values() for ref in refs}
    here = Path(__file__).resolve().parent
    for path in sorted(here.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        for name in _test_functions(path):
            assert f"security/{path.name}::{name}" in indexed, f"{path.name}::{name} is not indexed"
