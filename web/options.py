"""Conversion options from form fields (browser form and API multipart).

Values stay as given except booleans and empty fields; the worker's
``Service`` checks them with the converter's own rules and refuses bad ones
with a stable code (``invalid_threshold``, ``invalid_preset``, …).
"""

from __future__ import annotations

from .problems import Refused

#: API field → option name
FIELDS = {"threshold": "threshold", "preset": "preset", "series": "series",
          "smooth": "smooth", "decimate": "decimate", "largest": "largest",
          "max_triangles": "max_triangles", "min_island_mm3": "min_island_mm3",
          "frame": "frame"}
TRUE = ("1", "true", "on", "yes")
FALSE = ("0", "false", "off", "no", "")
#: browser form only: preset "threshold" means "use the threshold field"
CUSTOM = "threshold"


def _bool(name, raw):
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise Refused(f"invalid_{name}", f"{name} must be true or false")


def from_form(form, *, allowed=None, browser=False) -> dict:
    """Options from ``form`` (a MultiDict); unknown fields are refused."""
    allowed = FIELDS if allowed is None else allowed
    options = {}
    for field in form:
        if field == "csrf_token":
            continue
        if field not in allowed:
            raise Refused("unknown_field", "Unknown form field; the fields are "
                          + ", ".join(sorted(allowed)) + ".")
        values = form.getlist(field)
        if len(values) != 1:
            raise Refused("invalid_option", f"{field} is given more than once.")
        raw = values[0].strip()
        if field == "largest":
            if _bool(field, raw):
                options["largest"] = True
            continue
        if raw == "":
            continue
        if len(raw) > 80:
            raise Refused(f"invalid_{field}", f"{field} is too long.")
        options[FIELDS[field]] = raw
    if browser:
        preset = options.get("preset")
        if preset == CUSTOM:
            options.pop("preset")
            if "threshold" not in options:
                raise Refused("invalid_threshold", "Enter a threshold for a custom level.")
        else:
            options.pop("threshold", None)  # the field is only used with "custom"
    return options
