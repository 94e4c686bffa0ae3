from flask import Flask
from jobs import scheduler

app = Flask(__name__)
scheduler.start()


@app.route("/")
def index() -> str:
    return "ok"
