"""ephemesh web: the Flask app that people and programs touch.

``create_app(test_config=None)`` builds it (``web/app.py``; config from the
environment, like Flask's tutorial app); one blueprint per audience:

* ``web.browser`` — upload page, job page (progress, 3D preview, report,
  download, delete now), privacy page, the vendored three.js files;
* ``web.api`` — ``/api/v1``: jobs and batches for API keys, problem+json;
* ``web.admin`` — ``/admin``: purge reports, retention status, API keys,
  the audit log.

The ``ephemesh`` console script (``web/cli.py``) lives in this package, so
importing it stays light: Flask and the worker are imported by ``create_app``.

Imports point one way: web → worker → converter.
"""

from __future__ import annotations


def create_app(test_config=None):
    """The app (see ``web.app.create_app``)."""
    from .app import create_app as factory  # Flask and the worker: only for an app

    return factory(test_config)
