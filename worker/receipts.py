"""Signed deletion receipts, and the salted digest of what an upload sent.

A receipt says that one stored object of a job — its upload or its result —
is gone: its opaque id (the job's), kind, bytes, the salted SHA-256 of what
was received, when it was received, converted and deleted, why, and whether
that was late.  It is made from the object's purge-ledger row (so it lives
as long as the row) and holds nothing else; the web signs it with the
server's Ed25519 key on request (Ed25519 signatures are deterministic: the
same row always gives the same receipt).

**What is hashed** (``received_sha256``).  The job's creation answer gives
its uploader ``receipt_salt``: 16 random bytes as 32 hex characters, kept
nowhere on the server.  The digest is::

    SHA-256( salt || SHA-256(part 1) || SHA-256(part 2) || ... )

over the 16 salt bytes and the 32-byte digests of the upload's ``files``
parts, each part exactly as it was sent (a zip as the zip, an empty part as
empty), in the order they were sent.  Whoever holds the files and the salt
recomputes it (``upload_digest``; in a shell: ``{ printf %s "$SALT" | xxd -r -p;
for f in FILES; do sha256sum "$f" | cut -c1-64 | xxd -r -p; done; } |
sha256sum``); nobody without the salt can test a file against it.
``UploadDigest`` computes it fed part by part, chunk by chunk, as an intake
that streams reads them.

**What is signed**: the receipt's fields but ``signature``, as canonical JSON
(keys sorted, no spaces, ASCII): ``message(receipt)``.  The receipt carries
the public key (raw 32 bytes, base64); its fingerprint (``fingerprint``) is
what ``ephemesh receipt verify`` prints to compare with the server's key at
``/.well-known/ephemesh-receipt-key``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import time
from pathlib import Path

from .states import STORED, Reason

FORMAT = "ephemesh-deletion-receipt/1"
#: every field of a receipt, in the order it is written
FIELDS = ("receipt", "id", "kind", "bytes", "received_sha256", "received", "converted",
          "deleted", "reason", "late", "public_key", "signature")
SALT_BYTES = 16
_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# ---------------------------------------------------------------- the digest
def new_salt() -> str:
    """A job's receipt salt (hex), given to its uploader and kept nowhere."""
    return secrets.token_hex(SALT_BYTES)


class UploadDigest:
    """The salted SHA-256 of an upload's parts, fed in the order they arrive:
    ``part()`` before each part, ``update(chunk)`` for its bytes."""

    def __init__(self, salt: str):
        self._outer = hashlib.sha256(bytes.fromhex(salt))
        self._part = None

    def part(self) -> None:
        self._close()
        self._part = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        if self._part is None:
            self.part()
        self._part.update(chunk)

    def _close(self) -> None:
        if self._part is not None:
            self._outer.update(self._part.digest())
            self._part = None

    def hexdigest(self) -> str:
        self._close()
        return self._outer.hexdigest()


def upload_digest(salt: str, parts) -> str:
    """``received_sha256`` of ``parts`` (bytes, in the order sent)."""
    digest = UploadDigest(salt)
    for part in parts:
        digest.part()
        digest.update(part)
    return digest.hexdigest()


# ---------------------------------------------------------------- the key
def load_key(path: Path, create: bool = True):
    """The Ed25519 private key in ``path`` (PEM, PKCS8); made (mode 0600)
    when missing and ``create``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_key(path, create=False)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        return key
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds no Ed25519 private key")
    return key


def public_raw(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def public_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def raw_from_pem(data: bytes) -> bytes:
    """The raw 32 bytes of an Ed25519 public key in PEM; ValueError otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(raw: bytes) -> str:
    """``SHA256:`` and the base64 of the public key's SHA-256 (as ssh shows keys)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


# ---------------------------------------------------------------- receipts
def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    ms = int(round(ts * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def body(row: dict) -> dict:
    """The unsigned receipt of one purge-ledger row (of an input or a result)."""
    received = row.get("received") if row.get("received") is not None else row["created"]
    return {
        "receipt": FORMAT,
        "id": row["object_id"],
        "kind": str(row["kind"]),
        "bytes": int(row["bytes"]),
        "received_sha256": row.get("received_sha256"),
        "received": iso(received),
        "converted": iso(row.get("converted")),
        "deleted": iso(row["deleted"]),
        "reason": str(row["reason"]),
        "late": bool(row["late"]),
    }


def message(receipt: dict) -> bytes:
    """What is signed: every field but ``signature``, as canonical JSON."""
    unsigned = {k: v for k, v in receipt.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def sign(unsigned: dict, key) -> dict:
    receipt = dict(unsigned, public_key=base64.b64encode(public_raw(key)).decode())
    receipt["signature"] = base64.b64encode(key.sign(message(receipt))).decode()
    return {k: receipt[k] for k in FIELDS}


def _b64(value, size):
    if not isinstance(value, str):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def field_problems(receipt) -> list[str]:
    """Each field that is missing, unexpected or malformed, named."""
    if not isinstance(receipt, dict):
        return ["the receipt is not a JSON object"]
    problems = [f"unexpected field {k!r}" for k in receipt if k not in FIELDS]
    problems += [f"missing field {k!r}" for k in FIELDS if k not in receipt]
    get = receipt.get

    def check(name, ok, why):
        if name in receipt and not ok:
            problems.append(f"field {name!r} {why}")

    check("receipt", get("receipt") == FORMAT, f"is not {FORMAT!r}")
    check("id", isinstance(get("id"), str) and _ID.match(get("id") or ""), "is not an opaque id")
    check("kind", get("kind") in {str(k) for k in STORED}, "is not input or result")
    check("bytes", isinstance(get("bytes"), int) and not isinstance(get("bytes"), bool)
          and get("bytes") >= 0, "is not a byte count")
    check("received_sha256", get("received_sha256") is None
          or (isinstance(get("received_sha256"), str) and _HEX64.match(get("received_sha256"))),
          "is not a SHA-256 in hex")
    for name in ("received", "converted", "deleted"):
        value = get(name)
        check(name, (value is None and name == "converted")
              or (isinstance(value, str) and _TIME.match(value)), "is not a UTC time")
    times = [get(n) for n in ("received", "converted", "deleted")]
    if not problems and times[0] > times[2]:
        problems.append("field 'deleted' is before 'received'")
    check("reason", get("reason") in {str(r) for r in Reason}, "is not a deletion reason")
    check("late", isinstance(get("late"), bool), "is not true or false")
    check("public_key", _b64(get("public_key"), 32) is not None, "is not an Ed25519 public key")
    check("signature", _b64(get("signature"), 64) is not None, "is not an Ed25519 signature")
    return problems


def verify(receipt, public_key: bytes | None = None) -> list[str]:
    """What is wrong with ``receipt`` (empty: it is valid).  With
    ``public_key`` (raw 32 bytes) the receipt must be signed by that key."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    problems = field_problems(receipt)
    if problems:
        return problems
    embedded = _b64(receipt["public_key"], 32)
    if public_key is not None and embedded != public_key:
        return [f"signed by another key ({fingerprint(embedded)}), not the one given "
                f"({fingerprint(public_key)})"]
    try:
        Ed25519PublicKey.from_public_bytes(embedded).verify(
            _b64(receipt["signature"], 64), message(receipt))
    except InvalidSignature:
        return ["the signature does not match the fields: a field or the signature was changed"]
    return []

