"""``lazy_import``: a module object that runs its import on first attribute access.

``dldl predict`` runs the network through ONNX Runtime and never needs torch, whose import alone
costs about 1.5 s and 220 MB. The modules that the photo pipeline shares with training
(:mod:`dldl.labels`, :mod:`dldl.losses`, :mod:`dldl.checkpoint`) bind ``torch`` with
``torch = lazy_import("torch")``: importing them is free, and torch is imported the first time one
of their torch functions runs. ``tests/test_predict.py`` checks that a prediction leaves torch
unimported.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


EXTRAS = {"torch": "train"}
"""Optional packages and the extra of dldl that installs them (``pip install 'dldl[train]'``)."""


class Missing(ModuleType):
    """Stands for an optional package that is not installed: any use of it is one
    :class:`~dldl.errors.DldlError` line saying what needs it and how to install it.

    >>> Missing("torch").zeros(3)
    Traceback (most recent call last):
    ...
    dldl.errors.DldlError: this needs torch, which is not installed: pip install 'dldl[train]' (prediction with the shipped default models needs no torch)
    """

    def __getattr__(self, attribute: str) -> object:
        from dldl.errors import DldlError

        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise DldlError(f"this needs {self.__name__}, which is not installed: pip install 'dldl[{EXTRAS.get(self.__name__, self.__name__)}]' "
                        "(prediction with the shipped default models needs no torch)")


def lazy_import(name: str) -> ModuleType:
    """The module ``name``: the real one if it is imported already, else a stand-in that imports it
    on first attribute access (``importlib.util.LazyLoader``; the stand-in then is the module).

    >>> lazy_import("json").dumps([1])
    '[1]'
    >>> lazy_import("no_such_module_here")
    Traceback (most recent call last):
    ...
    ModuleNotFoundError: No module named 'no_such_module_here'
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        if name in EXTRAS:  # an optional part of dldl: the module imports, and a use of it says what to install
            return Missing(name)
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def is_imported(name: str) -> bool:
    """Whether module ``name`` has really been imported (not merely bound by :func:`lazy_import`).

    >>> import json
    >>> is_imported("json"), is_imported("no_such_module_here")
    (True, False)
    """
    module = sys.modules.get(name)
    return module is not None and not isinstance(module, importlib.util._LazyModule)
