"""The admin blueprint: purge reports, retention status, API keys, audit log,
data-subject requests (``web/subjects.py``).

Accounts come from ``ephemesh admin add`` (argon2 hashes in the records).
Every login attempt is an audit row; repeated failures lock the account
and the address for ``EPHEMESH_LOCKOUT_SECONDS``.
"""

from __future__ import annotations

import json
import time

from flask import (
    Blueprint,
    Response,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from worker.report import as_records, render

from . import purge_chart, subjects
from .jobs import service
from .limits import FailureLock
from .security import address_pseudonym, address_subject, client_address

bp = Blueprint("admin", __name__, url_prefix="/admin")

SESSION_HOURS = 8


def current_admin() -> str | None:
    name, since = session.get("admin"), session.get("admin_since", 0)
    if not name or time.time() - since > SESSION_HOURS * 3600:
        return None
    return name


@bp.before_request
def require_login():
    if request.endpoint == "admin.login":
        return None
    if current_admin() is None:
        return redirect(url_for(".login"), 303)
    return None


def _lock() -> FailureLock:
    cfg = current_app.config
    return FailureLock(service().redis, "login", cfg["EPHEMESH_LOGIN_MAX_FAILURES"],
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
    lock = _lock()
    subjects = (f"account:{name}", address_subject(client_address()))
    minutes = -(-current_app.config["EPHEMESH_LOCKOUT_SECONDS"] // 60)
    if lock.locked(*subjects):
        records.audit("admin-login", actor, {**detail, "result": "locked"})
        return render_template("admin/login.html", error=(
            f"Too many failed logins: this account or address is locked for up to "
            f"{minutes} minutes.")), 429, {"Retry-After": str(lock.retry_after(*subjects))}
    if not name or not password or not records.verify_admin(name, password):
        now_locked = lock.fail(*subjects)
        records.audit("admin-login", actor, {**detail, "result": "failed"})
        error = "Wrong name or password."
        if now_locked:
            error += f" Too many failures: locked for up to {minutes} minutes."
        return render_template("admin/login.html", error=error), 401
    lock.clear(subjects[0])
    sid = session.get("sid")
    session.clear()
    if sid:
        session["sid"] = sid
    session["admin"], session["admin_since"] = name, time.time()
    records.audit("admin-login", actor, {**detail, "result": "ok"})
    return redirect(url_for(".dashboard"), 303)


@bp.post("/logout")
def logout():
    _audit("admin-logout")
    session.pop("admin", None)
    session.pop("admin_since", None)
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
