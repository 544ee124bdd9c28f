"""The OpenAPI document is valid, and the API is fuzzed against it (schemathesis): whatever a
client sends, the answer is never a 5xx, its status is one the document lists, and it is JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from storage import Storage
from storage import models as model_store
from tests.conftest import make_settings, market_app
from tests.operator.conftest import AUTH, TOKEN


def test_openapi_document_is_valid_and_covers_every_api_route(api: Any) -> None:
    response = api.get("/api/openapi.json")  # public: no token needed to read the description
    assert response.status_code == 200
    document = response.json
    validate(document)
    described = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    routes = {
        (method, rule.rule.replace("<int(max=9223372036854775807):alert_id>", "{alert_id}"))
        for rule in api.application.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == described
    assert "202" in document["paths"]["/api/ml/strategies"]["post"]["responses"]


@pytest.fixture
def fuzzed_app(tmp_path: Path) -> Any:
    app = market_app(make_settings(tmp_path, TVGW_API_TOKEN=TOKEN))
    # A job is already queued (with no runner), so a valid POST /api/ml/training is answered
    # 409 "busy" instead of starting hundreds of real trainings on a 2-core machine.
    storage = Storage(make_settings(tmp_path).database)
    model_store.queue_training_job(storage, symbol="BTC/USDT", timeframe="1h", params={})
    # Likewise a backtest is "running" (this very process stands for it): a valid backtest
    # action is answered 409 rather than starting real walk-forwards.
    folder = tmp_path / "backtests"
    folder.mkdir()
    (folder / "default-running.log").write_text("")
    (folder / "default-running.pid").write_text(str(os.getpid()))
    return app


@pytest.mark.slow
def test_api_never_answers_5xx_to_anything_the_document_allows(fuzzed_app: Any) -> None:
    """Every operation, with hypothesis-generated parameters and bodies (valid and not), through
    the real app: schemathesis checks no 5xx, a documented status, JSON, and the schemas."""
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", fuzzed_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 21

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=AUTH)

        fuzz()
