"""`fmnist serve`: a JSON API, the Open Inference Protocol and a page, for any trained models.

Needs the `serve` extra (FastAPI, uvicorn, python-multipart, prometheus-client).
"""

from fmnist.serve.app import Settings, create_app
from fmnist.serve.models import load_models

__all__ = ["Settings", "create_app", "load_models"]
