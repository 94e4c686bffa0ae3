SECRET_KEY = "not-secret"
ALLOWED_HOSTS = ["*"]
SECURE_SSL_REDIRECT = True

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "db.sqlite3",
    }
}
