"""dldl: facial age and attractiveness estimation by deep label-distribution learning (DLDL-v2).

One call gives every face in a photo: ``dldl.predict("party.jpg")`` (:func:`dldl.inference.predict`).

>>> import dldl
>>> dldl.create_model("tiny_age_net").head.out_features
101
"""

__version__ = "0.1.0"

from dldl.inference import predict  # noqa: E402
from dldl.labels import LabelSet  # noqa: E402
from dldl.models import create_model, list_models  # noqa: E402


def load(name_or_path, device="cpu", runtime="torch"):
    """A ready Estimator from a shipped model name, a checkpoint or an exported file; ``runtime``
    ``"onnx"`` runs it through ONNX Runtime (see :func:`dldl.pretrained.load`)."""
    from dldl.pretrained import load as _load

    return _load(name_or_path, device, runtime)


def list_pretrained() -> list[str]:
    """Names of the models shipped with the package."""
    from dldl.pretrained import list_pretrained as _list

    return _list()


__all__ = ["LabelSet", "create_model", "list_models", "load", "list_pretrained", "predict", "__version__"]
