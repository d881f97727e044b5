"""`fmnist serve`: a JSON API, the Open Inference Protocol and a page, for any trained models.

Needs the `serve` extra (FastAPI, uvicorn, python-multipart, prometheus-client, swagger-ui-bundle);
`fmnist.serve.settings` alone does not.
"""

from __future__ import annotations

__all__ = ["Settings", "create_app", "load_models"]


def __getattr__(name: str):
    if name == "create_app":
        from fmnist.serve.app import create_app

        return create_app
    if name == "load_models":
        from fmnist.serve.models import load_models

        return load_models
    if name == "Settings":
        from fmnist.serve.settings import Settings

        return Settings
    raise AttributeError(name)
