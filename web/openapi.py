"""The OpenAPI 3 document served at ``/api/v1/openapi.json``.

Written by hand next to the routes, except what is declared elsewhere: the
conversion options' schema comes from their declaration
(``converter/options.py``), the job and batch states from
``worker/states.py``.  ``tests/web/test_openapi.py`` checks that every route
is described (and nothing else), that the document is valid, and runs
schemathesis against the app.
"""

from __future__ import annotations

import functools

from converter.formats import FORMATS, ZIP_TYPE
from converter.options import EXCLUSIVE, OPTIONS
from worker.receipts import FIELDS as RECEIPT_FIELDS
from worker.receipts import FORMAT as RECEIPT_FORMAT
from worker.states import STORED, BatchStatus, JobStatus, Reason, ScanStatus

from .jobs import RESULT_FORMATS
from .options import WEB_OPTIONS, WITHOUT_SERIES
from .problems import WORKSPACE

PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                               "schema": {"type": "integer"}}}


def _problem(description, retry=False):
    out = {"description": description, "content": PROBLEM}
    if retry:
        out["headers"] = RETRY_AFTER
    return out


def _errors(*statuses):
    text = {400: "Bad input (see `code`)", 401: "Missing or bad API key",
            404: "No such job, batch, scan or series for this key", 405: "Method not allowed",
            409: "Not ready", 410: "Deleted", 413: "Upload too large or too many parts",
            415: "Not multipart/form-data",
            429: "Rate limited, blocked, or too many uploads at once (see Retry-After)",
            503: "The queue is unreachable, there is no room for the upload, or the server "
                 "is taking in all it may, for a moment (see Retry-After)"}
    return {str(s): _problem(text[s], retry=s in (429, 503)) for s in statuses}


def _accepted(content):
    """What an upload answers."""
    return {"202": {"description": "Accepted", "content": content,
                    "headers": {"Location": {"schema": {"type": "string"}}}},
            **_errors(400, 401, 413, 415, 429, 503)}


def _found(description, content):
    return {"200": {"description": description, "content": content},
            **_errors(401, 404, 429, 503)}


def _deleted():
    return {"204": {"description": "Deleted"}, **_errors(401, 404, 429, 503)}


def _download(description, *media_types):
    """What a result answers: the file, or not yet, or not any more."""
    binary = {m: {"schema": {"type": "string", "format": "binary"}} for m in media_types}
    return {"200": {"description": description, "content": binary},
            **_errors(401, 404, 409, 410, 429, 503)}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
RESULT_FORMAT = {"name": "format", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": list(RESULT_FORMATS), "default": "model"}}
#: what a result may be: each output format's media type, a zip, a DICOM instance
RESULT_TYPES = tuple(dict.fromkeys([f.media_type for f in FORMATS.values()]
                                   + [ZIP_TYPE, "application/dicom"]))
BATCH_ID = {"name": "batch_id", "in": "path", "required": True, "schema": {"type": "string"}}

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string",
              tuple: "string"}  # a tuple is sent as numbers separated by commas


def option_schema(name) -> dict:
    """One conversion option as a form field's JSON schema."""
    option = OPTIONS[name]
    schema = {"type": JSON_TYPES[option.type]}
    if option.type is tuple:
        number = r"\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*"
        schema["pattern"] = f"^{number}(,{number}){{{option.length - 1}}}$"
    for key, value in (("enum", option.choices and list(option.choices)),
                       ("minimum", option.minimum), ("exclusiveMinimum", option.above),
                       ("maximum", option.maximum)):
        if value is not None:
            schema[key] = value
    others = [o for group in EXCLUSIVE if name in group for o in group if o != name]
    schema["description"] = option.help + "".join(f"; not with {o}" for o in others)
    return schema


def _upload_body(with_series: bool):
    props = {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                       "description": "DICOM files, or zips of them"},
             **{name: option_schema(name)
                for name in (WEB_OPTIONS if with_series else WITHOUT_SERIES)}}
    return {"required": True, "content": {"multipart/form-data": {
        "schema": {"type": "object", "required": ["files"], "properties": props,
                   "additionalProperties": False},
        "encoding": {"files": {"contentType": "application/octet-stream, application/zip"}}}}}


RECEIPT_SALT = {"type": "string", "pattern": "^[0-9a-f]{32}$",
                "description": "in the creation answer only: the salt of this upload's "
                "`received_sha256` (kept nowhere on the server)"}

SCHEMAS = {
    "Problem": {
        "description": "A refusal (RFC 9457). `code` is stable; `detail` is for people. Codes: "
        "`missing_key`, `invalid_key`, `too_many_failures` (address blocked after bad keys), "
        "`rate_limited`, `not_found`, `not_ready`, `gone`, `method_not_allowed`, "
        "`unsupported_media_type`, `unknown_field`, `invalid_option` and `invalid_<field>` "
        "(e.g. `invalid_threshold`), `no_files`, `not_dicom`, `dicomdir_only`, "
        "`unsupported_archive`, `bad_archive`, `nested_archive`, `zip_symlink`, `zip_encrypted`, "
        "`zip_unsupported`, `zip_too_many_entries`, `zip_too_large`, `zip_ratio`, `too_large`, "
        "`too_many_parts`, `too_many_files`, `bad_request`, `headers_too_large`, "
        "`not_implemented`, `too_many_uploads` (429: too many uploads from the address at once), "
        "`unavailable`, `no_space` and `busy` (503), `internal_error`; the scan "
        "workspace's: " + ", ".join(f"`{c}`" for c in WORKSPACE) + ".",
        "type": "object", "required": ["type", "title", "status", "code", "detail"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                       "status": {"type": "integer"}, "code": {"type": "string"},
                       "detail": {"type": "string"}},
    },
    "Progress": {"type": "object", "properties": {"stage": {"type": "string"},
                                                  "percent": {"type": "number"}}},
    "Error": {"type": ["object", "null"], "properties": {"code": {"type": "string"},
                                                         "message": {"type": "string"}}},
    "Job": {
        "type": "object",
        "required": ["id", "status", "progress", "report", "error", "expires_at", "links"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": [str(s) for s in JobStatus]},
            "progress": {"$ref": "#/components/schemas/Progress"},
            "report": {"type": ["object", "null"],
                       "description": "the converter's report (triangles, volume, warnings…)"},
            "error": {"$ref": "#/components/schemas/Error"},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "expires_at": {"type": ["string", "null"], "format": "date-time"},
            "batch_id": {"type": ["string", "null"]},
            "scan_id": {"type": ["string", "null"],
                        "description": "the scan workspace it was made from"},
            "links": {"type": "object", "properties": {
                "self": {"type": "string"}, "result": {"type": "string"},
                "preview": {"type": "string", "description": "the reduced mesh for a 3D view "
                            "(EPHMESH1, at most 20 % of the STL's bytes)"},
                "receipt": {"type": "string"}}},
            "receipt_salt": RECEIPT_SALT,
        },
    },
    "Batch": {
        "type": "object", "required": ["id", "status", "jobs", "links"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": [str(s) for s in BatchStatus]},
            "error": {"$ref": "#/components/schemas/Error"},
            "created_at": {"type": ["string", "null"]},
            "expires_at": {"type": ["string", "null"]},
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "links": {"type": "object", "properties": {"self": {"type": "string"},
                                                       "result": {"type": "string"}}},
            "receipt_salt": RECEIPT_SALT,
        },
    },
    "Receipt": {
        "description": "One deleted object of a job (its upload or its result), signed with "
        "the server's Ed25519 key (public key at /.well-known/ephemesh-receipt-key). The "
        "signature covers every other field as canonical JSON (keys sorted, no spaces, ASCII); "
        "`received_sha256` is SHA-256(salt || SHA-256(part 1) || SHA-256(part 2) || ...) over "
        "the 16 bytes of `receipt_salt` and the `files` parts as sent, in order. Check one "
        "with `ephemesh receipt verify FILE`.",
        "type": "object",
        "required": list(RECEIPT_FIELDS),
        "additionalProperties": False,
        "properties": {
            "receipt": {"type": "string", "enum": [RECEIPT_FORMAT]},
            "id": {"type": "string", "description": "the job's opaque id"},
            "kind": {"type": "string", "enum": [str(k) for k in STORED]},
            "bytes": {"type": "integer", "minimum": 0},
            "received_sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            "received": {"type": "string", "format": "date-time"},
            "converted": {"type": ["string", "null"], "format": "date-time"},
            "deleted": {"type": "string", "format": "date-time"},
            "reason": {"type": "string", "enum": [str(r) for r in Reason]},
            "late": {"type": "boolean"},
            "public_key": {"type": "string", "description": "raw Ed25519 key, base64"},
            "signature": {"type": "string", "description": "Ed25519 signature, base64"},
        },
    },
    "Receipts": {
        "type": "object", "required": ["job", "receipts"],
        "properties": {"job": {"type": "string"},
                       "receipts": {"type": "array",
                                    "items": {"$ref": "#/components/schemas/Receipt"}}},
    },
}


SCHEMAS.update({
    "Series": {
        "description": "One series of a scan, for its uploader only (never recorded).",
        "type": "object", "required": ["n", "slices", "rows", "columns", "links"],
        "properties": {
            "n": {"type": "integer", "minimum": 1, "description": "its number in this list"},
            "number": {"type": ["integer", "null"], "description": "SeriesNumber"},
            "description": {"type": ["string", "null"]},
            "acquired": {"type": ["string", "null"], "description": "as the files say it"},
            "modality": {"type": "string"}, "slices": {"type": "integer"},
            "rows": {"type": "integer"}, "columns": {"type": "integer"},
            "spacing_mm": {"type": "array", "items": {"type": "number"},
                           "description": "[dx (columns), dy (rows), dz (slices)]"},
            "orientation": {"type": "string"}, "error": {"$ref": "#/components/schemas/Error"},
            "links": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "Scan": {
        "type": "object", "required": ["id", "status", "series", "expires_at", "links"],
        "properties": {
            "id": {"type": "string"},
            "status": {"type": "string", "enum": [str(s) for s in ScanStatus]},
            "series": {"type": "array", "items": {"$ref": "#/components/schemas/Series"}},
            "error": {"$ref": "#/components/schemas/Error"},
            "created_at": {"type": ["string", "null"], "format": "date-time"},
            "expires_at": {"type": ["string", "null"], "format": "date-time",
                           "description": "when the upload and its volumes go at the latest"},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
            "receipt_salt": RECEIPT_SALT}},
    "JobList": {
        "type": "object", "required": ["jobs", "next"],
        "properties": {"jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                       "next": {"type": ["string", "null"],
                                "description": "the next page, newest first"}}},
    "Histogram": {
        "type": "object", "required": ["edges", "counts", "range", "unit", "suggested"],
        "properties": {
            "n": {"type": "integer"},
            "edges": {"type": "array", "items": {"type": "number"}},
            "counts": {"type": "array", "items": {"type": "integer"}},
            "range": {"type": "array", "items": {"type": "number"}},
            "unit": {"type": "string"},
            "suggested": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "label": {"type": "string"},
                "value": {"type": "number"}, "region": {"type": "string"}}}}}},
    "SeriesGeometry": {
        "description": "How to show the series and turn a view's pixel into LPS mm: "
        "mm = origin + column × c + row × r + index × k, per plane.",
        "type": "object", "required": ["n", "unit", "range", "planes", "bounds_mm", "to_patient"],
        "properties": {"n": {"type": "integer"}, "unit": {"type": "string"},
                       "range": {"type": "array", "items": {"type": "number"}},
                       "planes": {"type": "object"}, "bounds_mm": {"type": "object"},
                       "to_patient": {"type": "object"}}},
    "Estimate": {
        "type": "object", "required": ["triangles", "bytes", "format", "seconds"],
        "properties": {"triangles": {"type": "integer"}, "bytes": {"type": "integer"},
                       "format": {"type": "string"}, "seconds": {"type": "number"},
                       "level": {"type": "number"}, "step": {"type": "integer"},
                       "n": {"type": "integer"}}},
})

SCAN_ID = {"name": "scan_id", "in": "path", "required": True, "schema": {"type": "string"}}
SERIES_N = {"name": "n", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0}}


def _query(name, schema, description):
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _json(name):
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _view(description, content):
    """What a view of a scan's series answers."""
    return {"200": {"description": description, "content": content},
            **_errors(400, 401, 404, 409, 410, 429, 503)}


def _workspace_paths() -> dict:
    """The scan workspace (``web/scans.py``) and the job list."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    options = [_query(name, option_schema(name), "as for POST /jobs") for name in WITHOUT_SERIES]
    series_body = {"required": False, "content": {"multipart/form-data": {"schema": {
        "type": "object", "additionalProperties": False,
        "properties": {"series": {"type": "integer", "minimum": 1,
                                  "description": "the series' `n` (default 1)"},
                       **{name: option_schema(name) for name in WITHOUT_SERIES}}}}}}
    return {
        "/jobs": {"get": {
            "operationId": "listJobs", "summary": "The caller's jobs, newest first",
            "parameters": [
                _query("status", {"type": "string"}, "comma-separated job states"),
                _query("scan", {"type": "string"}, "jobs made from this scan"),
                _query("batch", {"type": "string"}, "jobs of this batch"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size"),
                _query("cursor", {"type": "string"}, "from the previous page's `next`")],
            "responses": {"200": {"description": "A page of jobs", "content": _json("JobList")},
                          **_errors(400, 401, 429, 503)}}},
        "/jobs/{job_id}/preview": {
            "parameters": [JOB_ID],
            "get": {"operationId": "getJobPreview",
                    "summary": "The reduced mesh for a 3D view (EPHMESH1)",
                    "responses": _download("Reduced mesh", "application/octet-stream")}},
        "/scans": {"post": {
            "operationId": "createScan",
            "summary": "Upload a scan to look at and convert as often as you like",
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": ["files"], "additionalProperties": False,
                           "properties": {"files": {
                               "type": "array", "items": {"type": "string", "format": "binary"}}}}}}},
            "responses": {"201": {"description": "Created; `status` is `reading` until the "
                                  "series are listed", "content": _json("Scan"),
                                  "headers": {"Location": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 413, 415, 429, 503)}}},
        "/scans/{scan_id}": {
            "parameters": [SCAN_ID],
            "get": {"operationId": "getScan", "summary": "A scan and its series",
                    "responses": _found("The scan", _json("Scan"))},
            "delete": {"operationId": "deleteScan",
                       "summary": "Done: the upload, its volumes and every result from it go now",
                       "responses": _deleted()}},
        "/scans/{scan_id}/jobs": {
            "parameters": [SCAN_ID],
            "get": {"operationId": "getScanJobs", "summary": "The jobs made from the scan",
                    "responses": _found("Its jobs", {"application/json": {"schema": {
                        "type": "object", "properties": {
                            "scan": {"type": "string"},
                            "jobs": {"type": "array",
                                     "items": {"$ref": "#/components/schemas/Job"}}}}}})},
            "post": {"operationId": "createScanJob",
                     "summary": "Convert one of the scan's series, without uploading again",
                     "requestBody": series_body,
                     "responses": {"202": {"description": "Accepted", "content": _json("Job"),
                                           "headers": {"Location": {"schema": {"type": "string"}}}},
                                   **_errors(400, 401, 404, 409, 410, 429, 503)}}},
        "/scans/{scan_id}/series/{n}": {
            "parameters": [SCAN_ID, SERIES_N],
            "get": {"operationId": "getSeriesGeometry", "summary": "Planes, edges and mm map",
                    "responses": _view("The geometry", _json("SeriesGeometry"))}},
        "/scans/{scan_id}/series/{n}/histogram": {
            "parameters": [SCAN_ID, SERIES_N],
            "get": {"operationId": "getHistogram", "summary": "Values, presets and Otsu",
                    "responses": _view("The histogram", _json("Histogram"))}},
        "/scans/{scan_id}/series/{n}/slice": {
            "parameters": [SCAN_ID, SERIES_N],
            "get": {"operationId": "getSlice", "summary": "One slice view",
                    "parameters": [
                        _query("plane", {"type": "string",
                                         "enum": ["axial", "coronal", "sagittal"]}, "the view"),
                        _query("index", {"type": "integer"}, "from 0 (default: the middle)"),
                        _query("threshold", {"type": "number"},
                               "draw the region the surface at this level encloses"),
                        _query("window", {"type": "number"}, "with level: the grey window"),
                        _query("level", {"type": "number"}, "with window"),
                        _query("format", {"type": "string", "enum": ["png", "values"]},
                               "png (default) or values: little-endian int16, row-major")],
                    "responses": _view("The slice", {"image/png": binary,
                                                     "application/octet-stream": binary})}},
        "/scans/{scan_id}/series/{n}/thumbnail": {
            "parameters": [SCAN_ID, SERIES_N],
            "get": {"operationId": "getThumbnail", "summary": "The middle axial slice, small",
                    "responses": _view("PNG", {"image/png": binary})}},
        "/scans/{scan_id}/series/{n}/estimate": {
            "parameters": [SCAN_ID, SERIES_N],
            "get": {"operationId": "getEstimate",
                    "summary": "Triangles and bytes the options would make (coarse pass)",
                    "parameters": options,
                    "responses": _view("The estimate", _json("Estimate"))}},
    }


@functools.lru_cache(maxsize=1)
def document() -> dict:
    job_json = {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}
    batch_json = {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ephemesh API", "version": "1.0.0",
                 "description": "DICOM series in, STL surfaces out; nothing kept. Uploads are "
                 "deleted when their conversion ends, results within the retention "
                 "(at most one hour)."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a key from `ephemesh keys create`"}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/jobs": {"post": {
                "operationId": "createJob", "summary": "Convert one series",
                "requestBody": _upload_body(True), "responses": _accepted(job_json)},
                **_workspace_paths().pop("/jobs")},
            "/jobs/{job_id}": {
                "parameters": [JOB_ID],
                "get": {"operationId": "getJob", "summary": "A job's status and report",
                        "parameters": [_query("wait", {"type": "number", "minimum": 0,
                                                       "maximum": 30},
                                              "answer when the status changes, or after this "
                                              "many seconds")],
                        "responses": {**_found("The job", job_json),
                                      **_errors(400)}},
                "delete": {"operationId": "deleteJob",
                           "summary": "Delete the upload and the result now",
                           "responses": _deleted()}},
            "/jobs/{job_id}/result": {
                "parameters": [JOB_ID, RESULT_FORMAT],
                "get": {"operationId": "getJobResult", "summary": "The model file",
                        "responses": _download(
                            "The model in the job's format (attachment named model.stl, "
                            "model.3mf, model.ply, or model.zip for OBJ and for several "
                            "STL parts); with format=dicom its Encapsulated STL instance",
                            *RESULT_TYPES)}},
            "/jobs/{job_id}/receipt": {
                "parameters": [JOB_ID],
                "get": {"operationId": "getJobReceipt",
                        "summary": "Signed receipts of the job's deleted upload and result",
                        "responses": {
                            "200": {"description": "The receipts deleted so far (attachment)",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/Receipts"}}}},
                            **_errors(401, 404, 409, 429, 503)}}},
            "/batches": {"post": {
                "operationId": "createBatch",
                "summary": "Convert every series in a zip (one job per series)",
                "requestBody": _upload_body(False), "responses": _accepted(batch_json)}},
            "/batches/{batch_id}": {
                "parameters": [BATCH_ID],
                "get": {"operationId": "getBatch", "summary": "A batch and its jobs",
                        "responses": _found("The batch", batch_json)},
                "delete": {"operationId": "deleteBatch",
                           "summary": "Delete the upload and every job's model now",
                           "responses": _deleted()}},
            "/batches/{batch_id}/result": {
                "parameters": [BATCH_ID],
                "get": {"operationId": "getBatchResult",
                        "summary": "A zip of every finished STL and a manifest",
                        "responses": _download("Zip stream", "application/zip")}},
            **{path: item for path, item in _workspace_paths().items() if path != "/jobs"},
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document",
                                      "content": {"application/json": {"schema": {
                                          "type": "object"}}}}}}},
        },
    }
