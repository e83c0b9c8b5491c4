"""The OpenAPI document matches the routes, is a valid OpenAPI 3 document,
and the app answers as it says (schemathesis, generated requests)."""

import re

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from web.openapi import document


def _rule_to_path(rule: str) -> str:
    return re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.removeprefix("/api/v1"))


def test_every_api_route_is_documented_and_nothing_else(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1"):
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((_rule_to_path(rule.rule), method.lower()))
    doc = document()
    documented = {(path, method) for path, item in doc["paths"].items()
                  for method in item if method != "parameters"}
    assert routes == documented


def test_the_document_is_valid_openapi_3(client):
    body = client.get("/api/v1/openapi.json").json
    assert body["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(body)
    assert len(list(schema.get_all_operations())) == 22


@pytest.fixture
def api_schema(make_app, records):
    app = make_app(RATELIMIT_ENABLED=False, EPHEMESH_API_MAX_AUTH_FAILURES=10**6,
                   MAX_CONTENT_LENGTH=1 << 20)
    key = records.create_key("schemathesis")[1]
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    schema.config.headers = {"Authorization": f"Bearer {key}"}
    return schema


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_the_api_answers_as_documented(api_schema):
    # schemathesis's pytest plugin does not run on pytest 9 yet, so each
    # operation's strategy is driven by hypothesis here
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7  # the document itself may be left out
    for operation in operations:
        @hypothesis.settings(max_examples=12, deadline=None, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        @hypothesis.given(case=operation.as_strategy())
        def run(case):
            case.call_and_validate(checks=CHECKS)

        run()
