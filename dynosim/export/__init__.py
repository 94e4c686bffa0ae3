"""`dynosim export FORMAT`: one model of the app (model.py), one writer module per format, each of the same
shape, `write(model, path) -> list[Path]` (the files it wrote). Adding a format is one module and one row
in WRITERS."""
