"""Conversion options from form fields (browser form and API multipart).

The fields are the options the web offers (``converter.options.WEB_OPTIONS``,
named as the converter names them).  Values stay as given except booleans
and empty fields; the worker's ``Service`` checks them with the converter's
own rules and refuses bad ones with a stable code (``invalid_threshold``,
``invalid_preset``, …).
"""

from __future__ import annotations

from converter.formats import FORMATS
from converter.options import FRAME_LABELS, OPTIONS, WEB_OPTIONS

from .problems import Refused

TRUE = ("1", "true", "on", "yes")
FALSE = ("0", "false", "off", "no", "")
#: browser form only: preset "threshold" means "use the threshold field"
CUSTOM = "threshold"
#: a batch converts every series, and the browser lets its user pick one: no ``series``
WITHOUT_SERIES = tuple(name for name in WEB_OPTIONS if name != "series")


def _bool(name, raw):
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise Refused(f"invalid_{name}", f"{name} must be true or false")


def from_form(form, *, allowed=WEB_OPTIONS, browser=False) -> dict:
    """Options from ``form`` (a MultiDict); unknown fields are refused."""
    options = {}
    for field in form:
        if field == "csrf_token":
            continue
        if field not in allowed:
            raise Refused("unknown_field", "Unknown form field; the fields are "
                          + ", ".join(sorted(allowed)) + ".")
        values = form.getlist(field)
        if len(values) != 1 and not OPTIONS[field].repeat:
            raise Refused("invalid_option", f"{field} is given more than once.")
        if any(len(v) > 80 for v in values):
            raise Refused(f"invalid_{field}", f"{field} is too long.")
        # a repeatable option (structure) may come once per value, as on the command line
        raw = ",".join(v.strip() for v in values if v.strip())
        if OPTIONS[field].type is bool:
            if _bool(field, raw):
                options[field] = True
            continue
        if raw == "":
            continue
        if len(values) > 16:
            raise Refused(f"invalid_{field}", f"{field} is given too often.")
        options[field] = raw
    if browser:
        preset = options.get("preset")
        if preset == CUSTOM:
            options.pop("preset")
            if "threshold" not in options:
                raise Refused("invalid_threshold", "Enter a threshold for a custom level.")
        else:
            options.pop("threshold", None)  # the field is only used with "custom"
    return options


def bounds(name) -> dict:
    """An option's bounds and default as an ``<input type="number">`` takes
    them (``min``, ``max``, ``step``, ``value``), from the converter's
    declaration: the page's default is the API's and the command line's."""
    option = OPTIONS[name]
    out = {"min": option.minimum if option.above is None else None, "max": option.maximum,
           "step": 1 if option.type is int else "any", "value": option.default}
    return {k: v for k, v in out.items() if v is not None}


#: the labels of options with choices, for the upload page's <select>s
CHOICE_LABELS = {"format": {name: f.label for name, f in FORMATS.items()},
                 "frame": FRAME_LABELS}


def choices(name) -> list[tuple[str, str]]:
    """An option's choices as ``(value, label)``, from the converter's declaration."""
    labels = CHOICE_LABELS.get(name, {})
    return [(value, labels.get(value, value)) for value in OPTIONS[name].choices]
