SECRET_KEY = "not-secret"
ALLOWED_HOSTS = ["*"]
SECURE_SSL_REDIRECT = True

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "db.sqlite3",
    }
}

# Heroku's Python buildpack runs collectstatic at build time: it needs these.
INSTALLED_APPS = ["django.contrib.staticfiles"]
STATIC_URL = "static/"
STATIC_ROOT = "staticfiles"
