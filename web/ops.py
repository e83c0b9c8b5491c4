"""The ``ops`` blueprint: what operators and orchestrators ask, not users.

``/livez`` answers while the process does (no dependency checked);
``/readyz`` is 200 when Redis, the records database and the store answer and
a sweep finished within two sweep periods, else 503 problem+json (code
``not_ready``) naming the failing parts (``worker/health.py``).  No access-log
row, no rate limit: probes come every few seconds from the orchestrator.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, json

from worker.health import Probe, problem_body, readiness

bp = Blueprint("ops", __name__)
#: endpoints that write no access-log row and count against no rate limit
ENDPOINTS = ("ops.livez", "ops.readyz")


def init_app(app, service) -> None:
    app.extensions["ephemesh.probe"] = Probe(service.ctx)
    app.register_blueprint(bp)


def _json(body: dict, status: int = 200, mimetype: str = "application/json") -> Response:
    return Response(json.dumps(body), status=status, mimetype=mimetype)


@bp.get("/livez")
def livez():
    return _json({"live": True})


@bp.get("/readyz")
def readyz():
    ready, body = readiness(current_app.extensions["ephemesh.probe"].checks())
    if ready:
        return _json(body)
    return _json(problem_body(body), 503, "application/problem+json")
