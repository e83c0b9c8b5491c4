"""The admin blueprint: purge reports, retention status, API keys, audit log,
data-subject requests (``web/subjects.py``).

Accounts come from ``ephemesh admin add`` (argon2 hashes in the records);
a login is a server-side session (``web/sessions.py``: 1 h idle, 8 h at
most, ended at logout, by a new password or by removing the account).
Every login attempt is an audit row; repeated failures lock that address
out of that account for ``EPHEMESH_LOCKOUT_SECONDS`` and slow the account
down for the addresses that failed on it (``limits.LoginThrottle``), never
for an address with no failures: the owner still gets in.
"""

from __future__ import annotations

import json
import time

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from worker.report import as_records, render

from . import purge_chart, sessions, subjects
from .jobs import service
from .limits import LoginThrottle
from .security import address_pseudonym, client_address

bp = Blueprint("admin", __name__, url_prefix="/admin")

def _sessions() -> sessions.AdminSessions:
    return sessions.AdminSessions(service().redis, service().records)


def current_admin() -> str | None:
    """The account of this request's live server-side session (``web/sessions.py``)."""
    if "admin" not in g:
        g.admin = _sessions().current(session.get("admin_session"))
    return g.admin


@bp.before_request
def require_login():
    if request.endpoint == "admin.login":
        return None
    if current_admin() is None:
        return redirect(url_for(".login"), 303)
    return None


def _throttle() -> LoginThrottle:
    cfg = current_app.config
    return LoginThrottle(service().redis, cfg["EPHEMESH_LOGIN_MAX_FAILURES"],
                         cfg["EPHEMESH_LOCKOUT_SECONDS"])


def _audit(event, detail=None):
    service().records.audit(event, f"admin:{current_admin()}", detail)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("admin/login.html")
    records = service().records
    name = request.form.get("name", "").strip()[:80]
    password = request.form.get("password", "")
    known = any(a["name"] == name for a in records.list_admins())
    actor = f"admin:{name}" if known else "unknown"
    detail = {"address": address_pseudonym()}
    throttle, address = _throttle(), client_address()
    refused = throttle.refusal(name, address)
    if refused:
        why, retry = refused
        records.audit("admin-login", actor, {**detail, "result": why})
        if why == "locked":
            minutes = -(-retry // 60)
            error = (f"Too many failed logins for this account from this address: try again "
                     f"in {minutes} minute{'s' if minutes != 1 else ''}.")
        else:
            error = (f"This account has had many failed logins, and so has this address: try "
                     f"again in {retry} seconds.")
        g.retry_after = retry  # the limiter would say its window's end
        return render_template("admin/login.html", error=error), 429, {"Retry-After": str(retry)}
    if not name or not password or not records.verify_admin(name, password):
        throttle.fail(name, address)
        records.audit("admin-login", actor, {**detail, "result": "failed"})
        return render_template("admin/login.html", error="Wrong name or password."), 401
    throttle.succeed(name, address)
    sid = session.get("sid")
    previous = session.get("admin_session")
    session.clear()
    if sid:
        session["sid"] = sid
    _sessions().end(previous)
    session["admin_session"] = _sessions().start(name)
    records.audit("admin-login", actor, {**detail, "result": "ok"})
    return redirect(url_for(".dashboard"), 303)


@bp.post("/logout")
def logout():
    _audit("admin-logout")
    _sessions().end(session.pop("admin_session", None))
    g.pop("admin", None)
    return redirect(url_for(".login"), 303)


def _days():
    try:
        return max(1, min(3660, int(request.args.get("days", "30"))))
    except ValueError:
        return 30


def _summary(days) -> list[dict]:
    """The purge summary of the last ``days`` days."""
    return service().records.purge_summary(time.time() - days * 86400)


@bp.get("/", endpoint="dashboard")
def dashboard():
    days = _days()
    rows = _summary(days)
    return render_template("admin/dashboard.html", rows=rows, chart=purge_chart.chart(rows, days=days),
                           retention=service().retention_status(), days=days, admin=current_admin(),
                           settings=current_app.extensions["ephemesh.settings"])


@bp.get("/purges.csv")
def purges_csv():
    resp = Response(render(_summary(_days()), "csv"), mimetype="text/csv")
    resp.headers["Content-Disposition"] = "attachment; filename=purge-report.csv"
    return resp


@bp.get("/purges.json")
def purges_json():
    days = _days()
    body = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "days": days,
            "rows": as_records(_summary(days))}
    resp = Response(json.dumps(body, indent=1), mimetype="application/json")
    resp.headers["Content-Disposition"] = "attachment; filename=purge-report.json"
    return resp


@bp.get("/retention.json")
def retention_json():
    return Response(json.dumps(service().retention_status()), mimetype="application/json")


@bp.get("/keys")
def keys():
    return render_template("admin/keys.html", keys=service().records.list_keys(),
                           admin=current_admin())


@bp.post("/keys")
def create_key():
    name = request.form.get("name", "").strip()
    records = service().records
    if not name or len(name) > 80:
        return render_template("admin/keys.html", keys=records.list_keys(), admin=current_admin(),
                               error="A key name is 1 to 80 characters."), 400
    key_id, plaintext = records.create_key(name, actor=f"admin:{current_admin()}")
    return render_template("admin/keys.html", keys=records.list_keys(), admin=current_admin(),
                           new_key=plaintext, new_name=name)


@bp.post("/keys/revoke")
def revoke_key():
    prefix = request.form.get("prefix", "")
    records = service().records
    if not records.revoke_key(prefix, actor=f"admin:{current_admin()}"):
        return render_template("admin/keys.html", keys=records.list_keys(), admin=current_admin(),
                               error="No live key has that prefix."), 404
    return redirect(url_for(".keys"), 303)


@bp.get("/audit")
def audit():
    rows = service().records.audit_rows(limit=300)
    return render_template("admin/audit.html", rows=rows, admin=current_admin())



@bp.get("/subjects", endpoint="subjects")
def subjects_page():
    return render_template("admin/subjects.html", admin=current_admin())


@bp.errorhandler(subjects.NotAnAddress)
def _subject_refused(exc):
    return render_template("admin/subjects.html", admin=current_admin(), error=str(exc)), 400


def _subject_request(action):
    """``subjects.export`` or ``subjects.erase`` of the form's address, by this admin
    (an address that is not one: the page again, saying so)."""
    svc = service()
    return action(svc.records, svc.redis, request.form.get("address", ""),
                  f"admin:{current_admin()}")


@bp.post("/subjects/export", endpoint="subject_export")
def subject_export():
    found = _subject_request(subjects.export)
    resp = Response(json.dumps(found, indent=1), mimetype="application/json")
    resp.headers["Content-Disposition"] = "attachment; filename=subject-export.json"
    return resp


@bp.post("/subjects/erase", endpoint="subject_erase")
def subject_erase():
    if request.form.get("confirm") != "yes":
        return _subject_refused("Tick the box to confirm the erasure.")
    return render_template("admin/subjects.html", admin=current_admin(),
                           erased=_subject_request(subjects.erase))
