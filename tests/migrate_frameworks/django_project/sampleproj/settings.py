"""A minimal project: one app, PostgreSQL (NAME and HOST from the environment when set)."""

import os

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
