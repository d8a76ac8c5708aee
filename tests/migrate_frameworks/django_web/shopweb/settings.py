"""The web shop: one app on PostgreSQL at $DATABASE_URL, served by app.py."""

import os
from urllib.parse import urlsplit

SECRET_KEY = "not-secret"
USE_TZ = True
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "shopweb.urls"
INSTALLED_APPS = ["shop"]
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
_url = urlsplit(os.environ.get("DATABASE_URL", "postgresql://postgres@localhost/shop"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.lstrip("/"),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or 5432),
        "USER": _url.username or "",
        "CONN_MAX_AGE": None,  # one connection per gunicorn worker thread (app.py), kept
    }
}
# a failed request's traceback goes to the instance's log (stderr)
LOGGING = {
    "version": 1,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
