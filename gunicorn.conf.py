"""``gunicorn wsgi:app`` from a checkout reads this file by itself: the settings live in the
package (:mod:`tvgw.gunicorn_conf`), the same ones ``tvgw serve`` uses from an installed wheel."""

from tvgw.gunicorn_conf import *  # noqa: F403
