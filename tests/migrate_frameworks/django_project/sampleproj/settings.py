"""A minimal project: one app, PostgreSQL (from $DATABASE_URL, or SAMPLE_DB_* when set)."""

import os
from urllib.parse import urlsplit

SECRET_KEY = "not-secret"
USE_TZ = True
INSTALLED_APPS = ["shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("SAMPLE_DB_NAME", "sample"),
        "HOST": os.environ.get("SAMPLE_DB_HOST", "localhost"),
        "PORT": os.environ.get("SAMPLE_DB_PORT", "5432"),
        "USER": os.environ.get("SAMPLE_DB_USER", "postgres"),
    }
}
if os.environ.get("DATABASE_URL"):
    _url = urlsplit(os.environ["DATABASE_URL"])
    DATABASES["default"].update(
        NAME=_url.path.lstrip("/"),
        HOST=_url.hostname or "",
        PORT=str(_url.port or 5432),
        USER=_url.username or "",
    )
