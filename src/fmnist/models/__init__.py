"""The model registry; importing this package registers every model."""

from . import study  # noqa: F401  (registers the study's models)
from .registry import count_params, create_model, describe, flops_per_image, list_models, register_model

__all__ = ["count_params", "create_model", "describe", "flops_per_image", "list_models", "register_model"]
