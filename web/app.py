"""The app factory: settings, the service, the blueprints, the hooks."""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

from flask import Flask, current_app, g, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from worker import logs
from worker.config import Settings
from worker.private import private_dir
from worker.receipts import load_key
from worker.records import access_method
from worker.service import Service

from . import admin, api, browser, dicomweb, ops, problems, scans, security
from . import config as web_config
from .inflight import InFlight
from .jobs import stage_label
from .limits import apply_limits, make_limiter

log = logging.getLogger("ephemesh.web")


def create_app(test_config=None):
    """The app.  ``test_config`` may hold Flask config and ``EPHEMESH_SETTINGS``
    (a ``worker.config.Settings``); otherwise everything comes from the
    environment."""
    test_config = dict(test_config or {})
    settings = test_config.pop("EPHEMESH_SETTINGS", None) or Settings.from_env()
    private_dir(settings.data_dir)

    app = Flask(__package__, instance_path=str(settings.data_dir / "instance"))
    app.request_class = security.SpoolingRequest
    app.config.from_mapping(web_config.from_env(settings))
    app.config.update(test_config)
    Path(app.config["EPHEMESH_SPOOL_DIR"]).mkdir(parents=True, exist_ok=True)
    os.chmod(app.config["EPHEMESH_SPOOL_DIR"], 0o700)

    hops = app.config["EPHEMESH_TRUSTED_PROXIES"]
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    service = Service(settings)
    app.extensions["ephemesh.service"] = service
    app.extensions["ephemesh.settings"] = settings
    app.extensions["ephemesh.receipt_key"] = load_key(app.config["EPHEMESH_RECEIPT_KEY_FILE"])

    CSRFProtect(app)
    # the upload's token is checked by web/intake.py before the body is read,
    # as the global check would parse the whole form into memory first
    app.extensions["csrf"].exempt("web.browser.create_job_view")
    app.extensions["ephemesh.inflight"] = InFlight.from_config(app.config)
    problems.register(app)

    app.register_blueprint(browser.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(dicomweb.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(scans.bp)
    ops.init_app(app, service)
    app.extensions["csrf"].exempt(api.bp)  # bearer keys, never cookies
    app.extensions["csrf"].exempt(dicomweb.bp)
    app.extensions["csrf"].exempt(scans.bp)  # keys; a session's POST is checked in the view

    # registered before the limiter's hook, so it runs after it (Flask runs
    # after_request hooks last-registered first)
    app.after_request(security.tidy_limit_headers)
    limiter = make_limiter(app, settings.effective_redis_url)
    apply_limits(app, limiter)
    app.extensions["ephemesh.limiter"] = limiter

    app.jinja_env.filters["utc"] = _utc
    app.jinja_env.filters["stage"] = stage_label
    app.jinja_env.filters["sentence"] = problems.sentence
    app.after_request(security.add_headers)
    app.after_request(_record_access)
    # first of all before_request hooks, so a request the limiter refuses has its id too
    app.before_request_funcs.setdefault(None, []).insert(0, _start_request)
    app.after_request(_log_request)
    return app


def _start_request():
    """A random id for this request (logs, ``X-Request-Id``), and its start."""
    g.request_id = secrets.token_hex(8)
    g.request_started = time.monotonic()
    logs.request_id.set(g.request_id)


def _log_request(response):
    """In JSON logs, one line per request: method, the route's rule (never the
    path or query), status, duration — and no address."""
    rid = g.get("request_id")
    if rid:
        response.headers["X-Request-Id"] = rid
    if logs.is_json() and request.endpoint not in security.STATIC_ENDPOINTS:
        log.info("request", extra={
            "request_id": rid, "method": access_method(request.method),
            "route": request.url_rule.rule if request.url_rule else "(unmatched)",
            "status": response.status_code,
            "duration_s": round(time.monotonic() - g.get("request_started", time.monotonic()), 4)})
    return response


def _utc(ts) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else "—"


def _record_access(response):
    """One access-log row per request: address, method, the route's rule
    (never the raw path or query), status, bytes.  API requests also add a
    usage row for their key."""
    if request.endpoint in security.STATIC_ENDPOINTS or request.endpoint in ops.ENDPOINTS:
        return response  # files anyone may fetch; the orchestrator's probes

    records = current_app.extensions["ephemesh.service"].records
    route = request.url_rule.rule if request.url_rule else "(unmatched)"
    nbytes = response.calculate_content_length() or 0
    try:
        records.log_access(security.client_address(), request.method, route,
                           response.status_code, nbytes)
        key = g.get("api_key")
        if key is not None:
            records.record_usage(key["id"], route, request.content_length or 0, nbytes)
    except Exception:  # a record failing must not fail the request
        log.error("could not write the access record for %s", route)
    return response
