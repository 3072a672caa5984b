"""The WSGI entry point gunicorn loads in each worker: `server.wsgi:app`."""

from server import create_app
from server.placement import announce

app = create_app()
with app.app_context():
    announce()  # in the worker (never the master): where each model runs; device = "cuda" unmet stops the start
