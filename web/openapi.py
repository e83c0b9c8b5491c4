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
from worker.states import STORED, BatchStatus, JobStatus, Reason

from .jobs import RESULT_FORMATS
from .options import WEB_OPTIONS, WITHOUT_SERIES

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
            404: "No such job or batch for this key", 405: "Method not allowed",
            409: "Not ready", 410: "Deleted", 413: "Upload too large or too many parts",
            415: "Not multipart/form-data", 429: "Rate limited or blocked (see Retry-After)",
            503: "The queue is unreachable, or there is no room for the upload, for a "
                 "moment (see Retry-After)"}
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

JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def option_schema(name) -> dict:
    """One conversion option as a form field's JSON schema."""
    option = OPTIONS[name]
    schema = {"type": JSON_TYPES[option.type]}
    for key, value in (("enum", option.choices and list(option.choices)),
                       ("minimum", option.minimum), ("exclusiveMinimum", option.above),
                       ("maximum", option.maximum)):
        if value is not None:
            schema[key] = value
    others = [b if a == name else a for a, b in EXCLUSIVE if name in (a, b)]
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
        "`not_implemented`, `unavailable` and `no_space` (503), `internal_error`.",
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
            "links": {"type": "object", "properties": {"self": {"type": "string"},
                                                       "result": {"type": "string"},
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
                "requestBody": _upload_body(True), "responses": _accepted(job_json)}},
            "/jobs/{job_id}": {
                "parameters": [JOB_ID],
                "get": {"operationId": "getJob", "summary": "A job's status and report",
                        "responses": _found("The job", job_json)},
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
            "/openapi.json": {"get": {
                "operationId": "openapi", "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI 3 document",
                                      "content": {"application/json": {"schema": {
                                          "type": "object"}}}}}}},
        },
    }
