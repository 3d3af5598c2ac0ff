"""Architectures, created by name: ``create_model("thin_age_net", num_outputs=101)``.

The architecture modules (``vgg``, ``mobilenet``, ``dlib_resnet``; torch) are imported, and so
register themselves, the first time the registry is asked for a model.
"""

from dldl.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
