"""`fmnist serve`: a JSON API, the Open Inference Protocol and a page, for any trained models.

Needs the `serve` extra (FastAPI, uvicorn, python-multipart, prometheus-client).
"""

from .app import Settings, create_app

__all__ = ["Settings", "create_app"]
