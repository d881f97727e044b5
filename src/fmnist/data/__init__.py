"""The dataset and images: finding, verifying and reading Fashion-MNIST's IDX files as plain
tensors, the validation split, and turning a user's image file into a Fashion-MNIST-like one."""

from fmnist.data.dataset import CLASSES, FashionMNIST, class_counts, fingerprint, load_fashion_mnist, stratified_split

__all__ = ["CLASSES", "FashionMNIST", "class_counts", "fingerprint", "load_fashion_mnist", "stratified_split"]
