"""Crashes at boot, as an app missing a config var does."""
import os

print("booting")
secret = os.environ["SECRET_KEY"]
