"""The ``ops`` blueprint: what operators and orchestrators ask, not users.

``/livez`` answers while the process does (no dependency checked);
``/readyz`` is 200 when Redis, the records database and the store answer and
a sweep finished within two sweep periods, else 503 problem+json (code
``not_ready``) naming the failing parts (``worker/health.py``); ``/metrics``
is Prometheus's text (``worker/metrics.py``), behind ``Authorization: Bearer
EPHEMESH_METRICS_TOKEN`` when that is set.  No access-log row, no rate
limit: probes and scrapes come every few seconds.
"""

from __future__ import annotations

import hmac
import os

from flask import Blueprint, Response, current_app, json, request

from worker import metrics
from worker.health import Probe, problem_body, readiness

from .problems import problem

bp = Blueprint("ops", __name__)
#: endpoints that write no access-log row and count against no rate limit
ENDPOINTS = ("ops.livez", "ops.readyz", "ops.metrics")


def init_app(app, service) -> None:
    app.extensions["ephemesh.probe"] = Probe(service.ctx)
    app.extensions["ephemesh.metrics"] = metrics.registry(service.ctx)
    app.config.setdefault("EPHEMESH_METRICS_TOKEN",
                          os.environ.get("EPHEMESH_METRICS_TOKEN") or None)
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


@bp.get("/metrics", endpoint="metrics")
def metrics_text():
    token = current_app.config["EPHEMESH_METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return problem(401, "unauthorized", "The metrics need the scraping token "
                           "(EPHEMESH_METRICS_TOKEN) as a bearer token.")
    ctype, body = metrics.exposition(current_app.extensions["ephemesh.metrics"])
    return Response(body, mimetype=ctype.split(";")[0], content_type=ctype)
