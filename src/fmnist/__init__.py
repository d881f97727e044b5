"""fmnist: train, compare and use image classifiers on Fashion-MNIST."""

from fmnist.api import Audit, Run, Study, Sweep, audit, ensemble, open, resume, runs, study, train
from fmnist.data import CLASSES, FashionMNIST, load_fashion_mnist, stratified_split
from fmnist.errors import FmnistError, UsageError
from fmnist.models import count_params, create_model, list_models, register_model
from fmnist.models.forward import predict_logits
from fmnist.reports.metrics import metrics_from_logits
from fmnist.training.config import TrainConfig
from fmnist.training.loop import fit
from fmnist.training.setup import build_model

__all__ = [
    "Audit",
    "CLASSES",
    "FashionMNIST",
    "FmnistError",
    "TrainConfig",
    "UsageError",
    "build_model",
    "count_params",
    "create_model",
    "ensemble",
    "fit",
    "list_models",
    "load_fashion_mnist",
    "metrics_from_logits",
    "predict_logits",
    "register_model",
    "resume",
    "Run",
    "runs",
    "stratified_split",
    "study",
    "Study",
    "Sweep",
    "train",
    "audit",
    "open",
]
__version__ = "0.1.0"
