"""The WSGI entry point gunicorn loads in each worker: `server.wsgi:app`."""

from server import create_app

app = create_app()
