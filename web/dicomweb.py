"""DICOMweb STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies`` and
``/dicomweb/studies/{study}``, keyed like the API (``Authorization: Bearer
KEY``, or Basic with the key as the password, as PACS DICOMweb clients send).

The body (``multipart/related; type="application/dicom"``) is read part by
part, never whole.  Each part must be one DICOM instance of a CT or MR image
storage class (``worker.scp.STORAGE_CLASSES``) in a transfer syntax the
converter decodes, within the upload limits, and of the study the URL names;
a part that is not is refused with its PS3.18 failure reason and the rest is
still taken.  The instances of each series become one job (as ``POST
/api/v1/jobs`` with the query's conversion options, e.g. ``?preset=bone``),
whose deadline counts from the request; the model also becomes an
Encapsulated STL instance (``?format=dicom``) and goes back to
``EPHEMESH_RETURN_TO`` when that is set.

The answer is the PS3.18 JSON: ReferencedSOPSequence (stored),
FailedSOPSequence (refused, with FailureReason), OtherFailuresSequence
(parts that are no instance at all); 200 when everything was stored, 202
when some was refused, 409 when nothing was; the jobs are in ``Link``
headers and in the private element (0009,1001) of the creator "EPHEMESH".
Nothing of a refused part is kept; the UIDs in the answer go to the client
that sent them and nowhere else.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from flask import Blueprint, Response, current_app, g, json, request, url_for

from worker.intake import Refusal
from worker.scp import STORAGE_CLASSES
from worker.service import Invalid

from . import api, intake, options, related
from .jobs import service
from .problems import Refused
from .security import client_address

bp = Blueprint("dicomweb", __name__, url_prefix="/dicomweb")

MEDIA_TYPE = "application/dicom+json"
#: PS3.18 Table 10.5.3-2 failure reasons (as PS3.4's C-STORE statuses)
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900  # the instance is not of the study the URL names
CANNOT_UNDERSTAND = 0xC000
SYNTAX_NOT_SUPPORTED = 0xC122
#: how much of a part is read to find its header (DICOM headers are small)
HEAD = 1 << 20
PRIVATE_CREATOR = "EPHEMESH"


@dataclass
class _Instance:
    sop_class: str
    sop_instance: str
    series: str
    study: str
    syntax: str


@dataclass
class _Series:
    """One series of the request, streamed into the store as its parts come."""

    intake: object  # worker.intake.Intake
    instances: list = field(default_factory=list)
    size: int = 0


bp.before_request(api.authenticate)


def _media_type_checked() -> bytes:
    """The boundary of a ``multipart/related; type="application/dicom"`` body, or 415/400."""
    if request.mimetype != "multipart/related":
        raise Refused("unsupported_media_type", "STOW-RS takes multipart/related; "
                      'type="application/dicom" bodies.', 415)
    kind = (request.mimetype_params.get("type") or "").strip('"').lower()
    if kind != "application/dicom":
        raise Refused("unsupported_media_type", 'Only type="application/dicom" parts (DICOM '
                      "instances) are accepted, not metadata with bulk data.", 415)
    try:
        return related.boundary_of(request.mimetype_params)
    except related.Malformed as exc:
        raise Refused("bad_multipart", str(exc) + ".") from None


def _accept_checked() -> None:
    accepted = request.accept_mimetypes
    if accepted and not any(accepted[m] for m in (MEDIA_TYPE, "application/json")):
        raise Refused("not_acceptable", "The answer is application/dicom+json.", 406)


def _header(head: bytes) -> _Instance | None:
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(head), stop_before_pixels=True, force=False,
                     specific_tags=["SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID",
                                    "StudyInstanceUID"])
        syntax = str(ds.file_meta.TransferSyntaxUID)
        found = _Instance(str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                          str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), syntax)
    except Exception:  # not DICOM, or the header is not whole: one answer for all
        return None
    return found if all((found.sop_class, found.sop_instance, found.series)) else None


def _head(part) -> tuple[bytes, bool]:
    """The first ``HEAD`` bytes of ``part`` (fewer when it is shorter); whether more follow."""
    head = bytearray()
    for chunk in part:
        head += chunk
        if len(head) >= HEAD:
            return bytes(head), True
    return bytes(head), False


def _item(instance: _Instance, reason: int | None = None) -> dict:
    item = {"00081150": {"vr": "UI", "Value": [instance.sop_class]},
            "00081155": {"vr": "UI", "Value": [instance.sop_instance]}}
    if reason is not None:
        item["00081197"] = {"vr": "US", "Value": [reason]}
    return item


@bp.post("/studies", endpoint="store")
@bp.post("/studies/<study>", endpoint="store_study")
def store(study=None):
    _accept_checked()
    boundary = _media_type_checked()
    # the query's options, over the key's defaults (``ephemesh keys create --option``)
    asked = options.from_form(request.args, allowed=options.WITHOUT_SERIES)
    opts = service().check_options({**(g.api_key.get("options") or {}), **asked})
    from converter.decoders import decodable_syntaxes

    syntaxes = set(decodable_syntaxes())
    app = current_app
    limits = intake.limits()
    series: dict[str, _Series] = {}
    failed, other = [], []
    with app.extensions["ephemesh.inflight"].admit(client_address(),
                                                   request.content_length) as ticket:
        try:
            for part in related.parts(request.stream.read, boundary,
                                      max_parts=limits.max_files * 2):
                if part.content_type not in ("", "application/dicom"):
                    other.append(CANNOT_UNDERSTAND)
                    continue
                head, more = _head(part)
                found = _header(head)
                if found is None:
                    other.append(CANNOT_UNDERSTAND)
                    continue
                reason = None
                if found.sop_class not in STORAGE_CLASSES:
                    reason = SOP_CLASS_NOT_SUPPORTED
                elif found.syntax not in syntaxes:
                    reason = SYNTAX_NOT_SUPPORTED
                elif study is not None and found.study != study:
                    reason = DOES_NOT_MATCH
                target = series.get(found.series)
                if reason is None and target is not None and (
                        len(target.instances) >= limits.max_files
                        or target.size + len(head) > limits.max_unpacked):
                    reason = OUT_OF_RESOURCES
                if reason is not None:
                    failed.append(_item(found, reason))
                    continue
                if target is None:  # its deadline counts from its first byte
                    target = series[found.series] = _Series(service().receive(
                        limits, spool_dir=app.config["EPHEMESH_SPOOL_DIR"], take=ticket.take))
                target.intake.begin()
                target.intake.feed(head)
                target.size += len(head)
                for chunk in part if more else ():
                    target.size += len(chunk)
                    if target.size > limits.max_unpacked:
                        raise Refused("too_large", "A series is larger than this service "
                                      "accepts.", 413)
                    target.intake.feed(chunk)
                target.intake.end()
                target.instances.append(found)
            return _jobs(series, opts, failed, other)
        except related.Malformed as exc:
            raise Refused("bad_multipart", str(exc) + ".") from None
        except Refusal as exc:
            raise Refused(exc.code, exc.message, exc.status) from None
        finally:
            for received in series.values():
                received.intake.abort()  # nothing once a job holds it


def _jobs(series, opts, failed, other) -> Response:
    """One job per series received; the PS3.18 answer."""
    stored, jobs = [], []
    for received in series.values():
        try:
            received.intake.finish()
            view = service().create_job(received.intake, opts, owner=g.owner, from_pacs=True)
        except (Refusal, Invalid):  # a refused series: each of its instances failed
            received.intake.abort()
            failed.extend(_item(i, PROCESSING_FAILURE) for i in received.instances)
            continue
        jobs.append(url_for("api.get_job", job_id=view["id"]))
        stored.extend(_item(i) for i in received.instances)
    return _answer(stored, failed, other, jobs)


def _answer(stored, failed, other, jobs) -> Response:
    body = {}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    if other:
        body["0008119A"] = {"vr": "SQ", "Value": [
            {"00081197": {"vr": "US", "Value": [reason]}} for reason in other]}
    if jobs:
        body["00090010"] = {"vr": "LO", "Value": [PRIVATE_CREATOR]}
        body["00091001"] = {"vr": "SQ", "Value": [
            {"00081190": {"vr": "UR", "Value": [url]}} for url in jobs]}
    status = 200 if stored and not (failed or other) else 202 if stored else 409
    resp = Response(json.dumps(body), status=status, mimetype=MEDIA_TYPE)
    if jobs:
        resp.headers["Link"] = ", ".join(f'<{url}>; rel="related"' for url in jobs)
    return resp
