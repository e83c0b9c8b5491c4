"""Data-subject requests for the records that hold an address: export and erase.

What holds an address, and how it is found:

* the **access log**: the address itself (every spelling of it: an IPv6
  address compressed or exploded, an IPv4 address mapped into IPv6);
* the **audit log**: rows whose detail holds the address's pseudonym
  (``security.pseudonym``: an HMAC under a monthly key in Redis), for every
  month whose key still exists (older pseudonyms are unlinkable by design);
* **Redis**: rate-limit counters and failure locks whose keys embed those
  pseudonyms (the address's, and the address as a lock's subject).

``export`` gathers them as one JSON document; ``erase`` deletes the access
rows and the Redis keys, redacts the audit rows (``Records.erase_audit_rows``:
the hash chain still holds, ``audit verify`` reports them as erased) and
writes one ``subject-erased`` audit row holding counts only, no address and
no pseudonym.  The same functions serve ``ephemesh subject`` and the admin
page.
"""

from __future__ import annotations

import ipaddress
import time

from worker.audit import ERASED_EVENT

from .security import address_subject, month_keys, pseudonym_under


class NotAnAddress(ValueError):
    """The text is not an IP address; the message says so (one line)."""


def parse_address(text: str):
    text = (text or "").strip()
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise NotAnAddress(f"{text[:60]!r} is not an IP address (IPv4 or IPv6)") from None


def spellings(address) -> list[str]:
    """Every way the access log may have written ``address``."""
    forms = {str(address), address.exploded}
    if address.version == 4:
        forms.add(f"::ffff:{address}")
    elif address.ipv4_mapped is not None:
        forms.add(str(address.ipv4_mapped))
    return sorted(forms)


def pseudonyms(redis, address) -> list[dict]:
    """The address's pseudonyms in every month whose key still exists."""
    out = []
    for month, salt in sorted(month_keys(redis).items()):
        for form in spellings(address):
            out.append({"month": month, "address": pseudonym_under(salt, month, form),
                        "lock": pseudonym_under(salt, month, address_subject(form))})
    return out


def _redis_keys(redis, values) -> list[dict]:
    keys = set()
    for value in values:
        keys.update(redis.scan_iter(match=f"*{value}*", count=1000))
    out = []
    for key in sorted(keys):
        ttl = redis.ttl(key)
        out.append({"key": key.decode(errors="replace"), "ttl_s": ttl if ttl >= 0 else None})
    return out


def find(records, redis, text) -> dict:
    """Every record about the address ``text``, as one JSON-able document."""
    address = parse_address(text)
    forms = spellings(address)
    names = pseudonyms(redis, address)
    values = {n[k] for n in names for k in ("address", "lock")}
    return {
        "address": str(address),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "access_log": records.access_rows_of(forms),
        "pseudonyms": names,
        "audit_log": records.audit_rows_with(values),
        "redis_keys": _redis_keys(redis, values),
        "note": "Audit rows carry an address only as a pseudonym under a monthly key; those "
                "of months whose key is gone can no longer be linked to any address.",
    }


def counts(found) -> dict:
    return {"access_rows": len(found["access_log"]), "audit_rows": len(found["audit_log"]),
            "redis_keys": len(found["redis_keys"])}


def export(records, redis, text, actor) -> dict:
    found = find(records, redis, text)
    records.audit("subject-exported", actor, counts(found))
    return found


def erase(records, redis, text, actor) -> dict:
    """Delete (and redact) every record about the address; return the counts."""
    found = find(records, redis, text)
    done = {"access_rows": records.delete_access_rows_of(spellings(parse_address(text))),
            "audit_rows": records.erase_audit_rows(r["id"] for r in found["audit_log"]),
            "redis_keys": redis.delete(*[k["key"] for k in found["redis_keys"]])
            if found["redis_keys"] else 0}
    records.audit(ERASED_EVENT, actor, done)
    return done
