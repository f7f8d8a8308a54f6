"""Typed review forms and checkpoint options in every console: admin, API and command.

Runs in-process (the embedded path and PostgreSQL alike): a decision continues the run here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django import forms as django_forms
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

import flowstone
from approvals import services
from approvals.forms import DecisionForm
from approvals.models import Approval
from approvals.review_forms import MAX_ERROR_CHARS, FormValueError, validate_form_value
from assets.cli import EXIT_INVALID
from assets.models import Materialization, Run
from flowstone.checkpoints import Option, checkpoint
from flowstone.errors import (
    ApprovalForbiddenError,
    ApprovalStaleError,
    DefinitionError,
    ValidationFailedError,
)
from flowstone.status import RunStatus, StepStatus
from lineage.models import AuditEvent
from tests.conftest import UseDefinitions
from tests.pipelines.review_forms import PAYMENT_FORM

pytestmark = [pytest.mark.django_db, pytest.mark.embedded]

HOSTILE_NAMES = [
    "",
    "PAY",
    "pay now",
    "x" * 41,
    "pay\n",
    "<script>",
    "approve",
    "../hold",
    "hold\x00",
]


@pytest.fixture(autouse=True)
def _review_forms(use_definitions: UseDefinitions) -> None:
    use_definitions("tests.pipelines.review_forms", resources={})


@pytest.fixture
def reviewer() -> User:
    user = User.objects.create_user("bob", is_staff=True)
    for codename in ("decide_approval", "view_approval", "view_run"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def _pending() -> Approval:
    result = flowstone.materialize_all("rf_report", requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return Approval.objects.get(run_id=result.run_id)


def _steps(approval: Approval) -> dict[str, str]:
    rows = Materialization.objects.filter(run_id=approval.run_id)
    return dict(rows.values_list("asset", "status"))


def _api(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _decide(user: User, approval: Approval, **body: Any) -> Any:
    return _api(user).post(f"/api/approvals/{approval.pk}/decide/", body, format="json")


def _still_pending(approval: Approval) -> None:
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.option == ""
    assert _steps(approval)["rf_payment"] == StepStatus.WAITING_APPROVAL
    assert not AuditEvent.objects.filter(run_id=approval.run_id, action__startswith="checkpoint")


# -- definition time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"type": "objekt"}, "/type"),
        ({"properties": {"amount": {"minimum": "zero"}}}, "/properties/amount/minimum"),
        ({"required": "amount"}, "/required"),
        ({"enum": [float("nan")]}, "must be JSON"),
        ([1, 2], "JSON Schema object"),
    ],
)
def test_an_invalid_form_schema_is_a_definition_error(form: Any, words: str) -> None:
    with pytest.raises(DefinitionError, match="form") as caught:
        checkpoint(form=form)
    assert words in caught.value.message


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_bad_option_names_are_definition_errors(name: str) -> None:
    with pytest.raises(DefinitionError):
        Option(name, "Label")


def test_bad_options_are_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="outcome"):
        Option("pay", "Pay", outcome="later")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="label"):
        Option("pay", " ")
    with pytest.raises(DefinitionError, match="unique: pay"):
        checkpoint(options=[Option("pay", "Pay"), Option("pay", "Pay again")])
    with pytest.raises(DefinitionError, match="Option"):
        checkpoint(options=["pay"])  # type: ignore[list-item]


# -- the one validation function ----------------------------------------------------------


def test_form_errors_name_each_field_by_json_pointer() -> None:
    with pytest.raises(FormValueError) as caught:
        validate_form_value(
            PAYMENT_FORM, {"amount": -1, "currency": "GBP", "lines": [1, "x"], "note": 5}
        )
    assert sorted(caught.value.errors) == ["/amount", "/currency", "/lines/1", "/note"]
    assert caught.value.message.startswith("the value does not match the review form: /amount:")
    with pytest.raises(FormValueError) as missing:
        validate_form_value(PAYMENT_FORM, {"note": "x"})
    assert missing.value.errors == {"/amount": ["This field is required."]}
    with pytest.raises(FormValueError) as whole:
        validate_form_value(PAYMENT_FORM, [1])
    assert list(whole.value.errors) == [""]
    validate_form_value(PAYMENT_FORM, {"amount": 0})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=8,
    )
)
def test_any_json_value_is_accepted_or_refused_with_one_line_messages(value: Any) -> None:
    refused: FormValueError | None = None
    try:
        validate_form_value(
            PAYMENT_FORM, {"amount": 1, **value} if isinstance(value, dict) else value
        )
    except FormValueError as exc:
        refused = exc
    if refused is not None:
        assert refused.errors
        assert "\n" not in refused.message
        assert all(len(m) <= MAX_ERROR_CHARS for ms in refused.errors.values() for m in ms)


# -- API -------------------------------------------------------------------------------------


def test_api_publishes_the_form_and_options(reviewer: User) -> None:
    approval = _pending()
    data = _api(reviewer).get(f"/api/approvals/{approval.pk}/").json()
    assert data["form"] == PAYMENT_FORM
    assert [o["name"] for o in data["options"]] == ["pay", "hold", "block"]
    assert data["options"][1] == {
        "name": "hold",
        "label": "Hold until next week",
        "outcome": "skip",
    }
    assert data["option"] == ""


def test_api_modify_refuses_an_invalid_field_and_records_nothing(reviewer: User) -> None:
    approval = _pending()
    response = _decide(reviewer, approval, decision="modify", value={"amount": -3, "note": 7})
    assert response.status_code == 400
    assert response.json() == {
        "value": {
            "/amount": ["-3 is less than the minimum of 0"],
            "/note": ["7 is not of type 'string'"],
        }
    }
    response = _decide(reviewer, approval, decision="modify", value={"currency": "EUR"})
    assert response.json() == {"value": {"/amount": ["This field is required."]}}
    _still_pending(approval)


def test_api_modify_with_a_valid_value_stores_it_downstream(reviewer: User) -> None:
    approval = _pending()
    value = {"amount": 99, "currency": "USD", "note": "half"}
    response = _decide(reviewer, approval, decision="modify", value=value)
    assert response.status_code == 200, response.json()
    assert response.json()["decided_value"] == value
    run = Run.objects.get(pk=approval.run_id)
    assert run.status == RunStatus.SUCCESS
    assert flowstone.load_value("rf_payment") == value
    assert flowstone.load_value("rf_ledger") == {"booked": 99}


def test_api_option_continue_takes_a_checked_value(reviewer: User) -> None:
    approval = _pending()
    refused = _decide(reviewer, approval, decision="option", option="pay", value={"amount": "x"})
    assert refused.status_code == 400
    assert list(refused.json()["value"]) == ["/amount"]
    _still_pending(approval)
    response = _decide(reviewer, approval, decision="option", option="pay", value={"amount": 7})
    assert response.status_code == 200
    assert response.json()["status"] == Approval.Status.MODIFIED
    assert response.json()["option"] == "pay"
    assert flowstone.load_value("rf_payment") == {"amount": 7}


def test_api_option_skip_skips_the_branch_and_the_run_succeeds(reviewer: User) -> None:
    approval = _pending()
    response = _decide(reviewer, approval, decision="option", option="hold")
    assert response.status_code == 200
    assert response.json()["status"] == Approval.Status.SKIPPED
    assert _steps(approval) == {
        "rf_invoice": StepStatus.SUCCESS,
        "rf_archive": StepStatus.SUCCESS,
        "rf_payment": StepStatus.SKIPPED,
        "rf_ledger": StepStatus.SKIPPED,
        "rf_report": StepStatus.SKIPPED,
    }
    run = Run.objects.get(pk=approval.run_id)
    assert (run.status, run.steps_skipped, run.steps_succeeded) == (RunStatus.SUCCESS, 3, 2)
    assert run.finished_at is not None
    audit = AuditEvent.objects.get(run_id=approval.run_id, action__startswith="checkpoint")
    assert audit.details["option"] == "hold"
    assert audit.details["outcome"] == "skip"
    assert audit.actor == "bob"


def test_api_option_fail_fails_the_step(reviewer: User) -> None:
    approval = _pending()
    response = _decide(reviewer, approval, decision="option", option="block")
    assert response.status_code == 200
    steps = _steps(approval)
    assert steps["rf_payment"] == StepStatus.FAILED
    assert steps["rf_ledger"] == StepStatus.UPSTREAM_FAILED
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.FAILED
    approval.refresh_from_db()
    assert (approval.status, approval.option) == (Approval.Status.REJECTED, "block")
    assert "Block the payee" in approval.reason
    error = Materialization.objects.get(run_id=approval.run_id, asset="rf_payment").error
    assert error is not None
    assert error["kind"] == "checkpoint_rejected"


def test_api_refuses_a_value_for_an_option_that_ends_the_step(reviewer: User) -> None:
    approval = _pending()
    response = _decide(reviewer, approval, decision="option", option="hold", value={"amount": 1})
    assert response.status_code == 400
    assert "takes no value" in response.json()["detail"]
    _still_pending(approval)


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if n] + ["skip", "nope", "ab" * 20])
def test_api_unknown_and_hostile_option_names_are_refused(reviewer: User, name: str) -> None:
    approval = _pending()
    response = _decide(reviewer, approval, decision="option", option=name)
    assert response.status_code == 400, response.json()
    body = response.json()
    assert "option" in body or "unknown option" in body["detail"]
    _still_pending(approval)


def test_api_option_decision_needs_the_option(reviewer: User) -> None:
    approval = _pending()
    assert _decide(reviewer, approval, decision="option").json() == {
        "option": ["Name the option to choose."]
    }
    _still_pending(approval)


# -- command -------------------------------------------------------------------------------


def test_command_modify_names_the_invalid_field_and_records_nothing(reviewer: User) -> None:
    approval = _pending()
    with pytest.raises(CommandError) as caught:
        call_command(
            "approvals", "modify", str(approval.pk), "--user", "bob", "--value", '{"amount": -1}'
        )
    assert caught.value.returncode == EXIT_INVALID
    message = str(caught.value)
    assert "\n" not in message
    assert "/amount: -1 is less than the minimum of 0" in message
    _still_pending(approval)
    out = io.StringIO()
    call_command(
        "approvals",
        "modify",
        str(approval.pk),
        "--user",
        "bob",
        "--value",
        '{"amount": 10, "currency": "USD"}',
        stdout=out,
    )
    assert "modified" in out.getvalue()
    assert flowstone.load_value("rf_ledger") == {"booked": 10}


def test_command_lists_and_decides_options(reviewer: User) -> None:
    approval = _pending()
    out = io.StringIO()
    call_command("approvals", "list", "--json", stdout=out)
    (listed,) = json.loads(out.getvalue())
    assert listed["form"] == PAYMENT_FORM
    assert [o["outcome"] for o in listed["options"]] == ["continue", "skip", "fail"]
    text = io.StringIO()
    call_command("approvals", "list", stdout=text)
    assert "options: pay, hold, block" in text.getvalue()
    for name in ("nope", "PAY", "<script>", "x" * 500):
        with pytest.raises(CommandError) as caught:
            call_command("approvals", "decide", str(approval.pk), "--user", "bob", "--option", name)
        assert caught.value.returncode == EXIT_INVALID
        assert "unknown option" in str(caught.value)
        assert "pay, hold, block" in str(caught.value)
    _still_pending(approval)
    out = io.StringIO()
    call_command(
        "approvals",
        "decide",
        str(approval.pk),
        "--user",
        "bob",
        "--option",
        "hold",
        "--json",
        stdout=out,
    )
    decided = json.loads(out.getvalue())
    assert (decided["status"], decided["option"]) == ("skipped", "hold")
    assert Run.objects.get(pk=approval.run_id).status == RunStatus.SUCCESS


# -- admin -----------------------------------------------------------------------------------


def _admin(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _fields(**values: Any) -> dict[str, Any]:
    base = {"value_0": "120.5", "value_1": "March", "value_2": '"EUR"', "value_4": "[1, 2]"}
    return {**base, **values}


def test_admin_renders_typed_fields_from_the_schema(reviewer: User) -> None:
    approval = _pending()
    page = _admin(reviewer).get(f"/admin/approvals/approval/{approval.pk}/decide/")
    html = page.content.decode()
    assert 'type="number" name="value_0" value="120.5"' in html
    assert 'min="0"' in html
    assert 'maxlength="200"' in html
    assert '<option value="&quot;EUR&quot;" selected>EUR</option>' in html
    assert 'type="checkbox" name="value_3"' in html
    assert '<textarea name="value_4"' in html  # an array: edited as JSON
    assert "Hold until next week (skip)" in html


def test_admin_shows_schema_errors_next_to_the_field_and_decides_nothing(reviewer: User) -> None:
    approval = _pending()
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    page = _admin(reviewer).post(url, _fields(decision="modify", value_0="-1"))
    assert page.status_code == 200
    assert page.context["form"].errors["value_0"] == ["-1 is less than the minimum of 0"]
    page = _admin(reviewer).post(url, _fields(decision="modify", value_1="n" * 201))
    assert page.context["form"].errors["value_1"] == [f"'{'n' * 196}..."]
    page = _admin(reviewer).post(url, _fields(decision="modify", value_0="", value_4='["x"]'))
    errors = page.context["form"].errors
    assert errors["value_0"] == ["This field is required."]
    assert errors["value_4"] == ["'x' is not of type 'integer'"]
    page = _admin(reviewer).post(url, _fields(decision="option:teleport"))
    assert "decision" in page.context["form"].errors
    _still_pending(approval)


def test_admin_rejects_whatever_the_fields_hold(reviewer: User) -> None:
    approval = _pending()
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    garbage = _fields(value_0="lots", value_4="[", reason="not this month")
    assert _admin(reviewer).post(url, {**garbage, "decision": "reject"}).status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.reason) == (Approval.Status.REJECTED, "not this month")


def test_admin_option_continue_stores_the_submitted_form_value(reviewer: User) -> None:
    approval = _pending()
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    response = _admin(reviewer).post(
        url, _fields(decision="option:pay", value_0="80", value_1="", value_2='"USD"')
    )
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.option) == (Approval.Status.MODIFIED, "pay")
    assert flowstone.load_value("rf_payment") == {  # the untouched fields stay as proposed
        "amount": 80.0,
        "currency": "USD",
        "lines": [1, 2],
    }


# -- references, refusal order, untouched options --------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        {"type": "object", "properties": {"amount": {"$ref": "#/$defs/money"}}},
        {"properties": {"amount": {"$ref": "#/$defs/money"}}, "$defs": {"cash": {}}},
        {"items": {"$ref": "#/definitions/line"}},
        {"properties": {"a": {"$ref": "https://example.com/money.json"}}},
        {"properties": {"a": {"$ref": "money.json"}}},
        {"$defs": {"n": {"$id": "https://x.test/n", "$ref": "#/$defs/gone"}}, "$ref": "#/$defs/n"},
        {"anyOf": [{"$ref": "#/anyOf/5"}]},
        {"properties": {"a": {"$dynamicRef": "#/$defs/nowhere"}}},
    ],
)
def test_a_reference_that_does_not_resolve_is_a_definition_error(form: Any) -> None:
    with pytest.raises(DefinitionError, match="does not resolve"):
        checkpoint(form=form)


@pytest.mark.parametrize(
    "form",
    [
        {"properties": {"amount": {"$ref": "#/$defs/money"}}, "$defs": {"money": {"minimum": 0}}},
        {
            "$id": "https://x.test/pay",
            "properties": {"a": {"$ref": "#/$defs/m"}},
            "$defs": {"m": {}},
        },
        {"$defs": {"n": {"$id": "https://x.test/n", "$ref": "#/$defs/q", "$defs": {"q": {}}}}},
        {"items": {"$ref": "#"}},
    ],
)
def test_references_that_resolve_within_the_form_are_accepted(form: Any) -> None:
    checkpoint(form=form)


@pytest.mark.parametrize("value", [1, {"amount": 5}, [1, [2]], None])
def test_a_form_that_cannot_check_a_value_is_invalid_input_never_an_error(value: Any) -> None:
    for form in ({"$ref": "#"}, {"properties": {"a": {"$ref": "#/$defs/gone"}}, "$ref": "#"}):
        with pytest.raises(ValidationFailedError, match="the review form cannot check"):
            validate_form_value(form, value)
    with pytest.raises(ValidationFailedError, match="cannot check"):
        validate_form_value({"properties": {"amount": {"$ref": "#/$defs/money"}}}, {"amount": 5})


def _validated(tmp_path: Path) -> list[str]:
    log = tmp_path / "review_forms.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if '"rf_validated"' in line]


def _quorum_pending() -> Approval:
    result = flowstone.materialize_all("rf_quorum_payment", requested_by="alice")
    assert result.status == RunStatus.WAITING_APPROVAL
    return Approval.objects.get(run_id=result.run_id)


def test_cheap_refusals_come_before_the_form_and_the_validator(
    reviewer: User, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLOWSTONE_DATA_DIR", str(tmp_path))
    quorum = _quorum_pending()
    for value in ({"amount": -1}, {"amount": 3}):
        with pytest.raises(ValidationFailedError, match="needs 2 approvals"):
            services.decide_approval(quorum.pk, "modify", actor="bob", value=value)
        with pytest.raises(ValidationFailedError, match="needs 2 approvals"):
            services.decide_approval(quorum.pk, "option", actor="bob", option="pay", value=value)
    refused = _decide(reviewer, quorum, decision="modify", value={"amount": -1})
    assert "needs 2 approvals" in json.dumps(refused.json())
    with pytest.raises(ApprovalForbiddenError):  # the requester, whatever the value
        services.decide_approval(quorum.pk, "modify", actor="alice", value={"amount": -1})
    assert _validated(tmp_path) == []
    assert not quorum.votes.exists()

    approval = _pending()
    flowstone.materialize("rf_invoice")  # a new invoice: the pending approval goes stale
    approval.refresh_from_db()
    assert approval.status == Approval.Status.STALE
    for value in ({"amount": -1}, {"amount": 3}):
        response = _decide(reviewer, approval, decision="modify", value=value)
        assert response.status_code == 409, response.content
        assert "is stale" in response.json()["detail"]
        with pytest.raises(ApprovalStaleError):
            services.decide_approval(approval.pk, "option", actor="bob", option="pay", value=value)
    decided = services.decide_approval(approval.pk, "reject", actor="bob", reason="new invoice")
    assert decided is not None
    response = _decide(reviewer, approval, decision="modify", value={"amount": -1})
    assert response.status_code == 409  # decided: no value is checked any more
    assert _validated(tmp_path) == []


def _as_posted(form: DecisionForm) -> dict[str, Any]:
    """What a browser posts for the rendered form when the reviewer changes no field."""
    posted: dict[str, Any] = {}
    for name in form.properties:
        shown = form[name].value()
        field = form.fields[name]
        if isinstance(field, django_forms.BooleanField):
            if shown:
                posted[name] = "on"
        elif isinstance(field, django_forms.ChoiceField):  # no matching choice: the first
            posted[name] = shown if field.valid_value(shown) else ""
        elif isinstance(field.widget, django_forms.Textarea) and shown is not None:
            lines = str(shown).replace("\r\n", "\n").replace("\r", "\n")
            posted[name] = lines.replace("\n", "\r\n")  # a textarea posts CRLF
        elif shown is not None:
            posted[name] = str(shown).replace("\r", "").replace("\n", "")  # an input drops them
    return posted


PROPOSED_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.none() | st.integers(0, 10**6) | st.floats(0, 1e6, allow_nan=False),
        "note": st.none() | st.sampled_from(["", "a\nb", "\r\n", "x\r"]) | st.text(max_size=20),
        "currency": st.none() | st.sampled_from(["EUR", "USD", "GBP"]),
        "urgent": st.none() | st.booleans(),
        "lines": st.none() | st.lists(st.integers(-5, 5), max_size=3) | st.just("x"),
        "extra": st.none() | st.text(max_size=5),
    },
)


@settings(max_examples=60, deadline=None)
@given(proposed=PROPOSED_FIELDS)
def test_a_continue_option_with_untouched_fields_continues_with_the_proposed_value(
    proposed: dict[str, Any],
) -> None:
    options = (Option("pay", "Pay now", outcome="continue"),)
    shown = DecisionForm(proposed=proposed, form_schema=PAYMENT_FORM, options=options)
    posted = {"decision": "option:pay", **_as_posted(shown)}
    form = DecisionForm(posted, proposed=proposed, form_schema=PAYMENT_FORM, options=options)
    assert form.is_valid(), form.errors
    assert form.cleaned_data.get("parsed_value") is None


def test_admin_continue_option_with_untouched_fields_approves_the_proposed_value(
    reviewer: User,
) -> None:
    approval = _pending()
    client = _admin(reviewer)
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    shown = client.get(url).context["form"]
    response = client.post(url, {"decision": "option:pay", **_as_posted(shown)})
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.option, approval.decided_value) == ("approved", "pay", None)
    assert flowstone.load_value("rf_payment") == approval.proposed_value


def test_admin_continue_option_modifies_only_the_fields_changed(reviewer: User) -> None:
    approval = _pending()
    client = _admin(reviewer)
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    posted = _as_posted(client.get(url).context["form"])
    assert (
        client.post(url, {**posted, "decision": "option:pay", "value_0": "80"}).status_code == 302
    )
    approval.refresh_from_db()
    assert isinstance(approval.proposed_value, dict)
    assert (approval.status, approval.decided_value) == (
        "modified",
        {**approval.proposed_value, "amount": 80},
    )


def test_admin_continue_option_untouched_under_a_quorum_is_a_vote(reviewer: User) -> None:
    approval = _quorum_pending()
    client = _admin(reviewer)
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    posted = _as_posted(client.get(url).context["form"])
    page = client.post(url, {**posted, "decision": "option:pay"}, follow=True).content.decode()
    assert f"Approval {approval.pk}: your vote is recorded (1 of 2)." in page
    approval.refresh_from_db()
    assert (approval.status, [v.voter for v in approval.current_votes()]) == ("pending", ["bob"])
    changed = client.post(url, {**posted, "decision": "option:pay", "value_0": "1"})
    assert "a modified value cannot be voted on" in changed.content.decode()


def test_admin_modify_still_stores_every_field(reviewer: User) -> None:
    approval = _pending()
    url = f"/admin/approvals/approval/{approval.pk}/decide/"
    response = _admin(reviewer).post(url, _fields(decision="modify"))
    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.decided_value) == (
        "modified",
        {"amount": 120.5, "note": "March", "currency": "EUR", "lines": [1, 2], "urgent": False},
    )
