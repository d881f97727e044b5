"""fmnist: train, compare and use image classifiers on Fashion-MNIST."""

from .config import TrainConfig
from .data import CLASSES, FashionMNIST, load_fashion_mnist, stratified_split
from .errors import FmnistError, UsageError
from .evaluate import metrics_from_logits
from .infer import predict_logits
from .models import count_params, create_model, list_models, register_model
from .train import fit
from .trainer import build_model

__all__ = ["CLASSES", "FashionMNIST", "FmnistError", "TrainConfig", "UsageError", "build_model",
           "count_params", "create_model", "fit", "list_models", "load_fashion_mnist", "metrics_from_logits",
           "predict_logits", "register_model", "stratified_split"]
__version__ = "0.1.0"
