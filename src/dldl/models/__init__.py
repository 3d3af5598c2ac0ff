"""Architectures, created by name: ``create_model("thin_age_net", num_outputs=101)``."""

from dldl.models import (
    dlib_resnet,  # noqa: F401  (registers dlib_resnet29)
    mobilenet,  # noqa: F401  (registers mobilenet_v2, efficientnet_lite0)
    vgg,  # noqa: F401  (registers thin_age_net, tiny_age_net, vgg16_bn)
)
from dldl.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
