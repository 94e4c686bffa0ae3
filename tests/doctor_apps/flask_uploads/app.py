"""Flask's file-upload pattern, as its documentation writes it: photos saved under the app's folder."""
import os

from flask import Flask, request
from werkzeug.utils import secure_filename

app = Flask(__name__)
app.config["UPLOAD_FOLDER"] = "uploads"


@app.post("/photos")
def upload():
    photo = request.files["photo"]
    name = secure_filename(photo.filename or "photo")
    photo.save(os.path.join(app.config["UPLOAD_FOLDER"], name))
    return {"saved": name}, 201
