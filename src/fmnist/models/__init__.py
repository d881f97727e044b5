"""The model registry; importing this package registers every model."""

from fmnist.models import resnet, study, wide  # noqa: F401  (registers their models)
from fmnist.models.registry import count_params, create_model, describe, flops_per_image, list_models, register_model

__all__ = ["count_params", "create_model", "describe", "flops_per_image", "list_models", "register_model"]
