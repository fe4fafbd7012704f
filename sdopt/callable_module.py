"""`sdopt.compress(...)`, `sdopt.evaluate(...)` and `sdopt.bench(...)` are the Python API's functions, and
`sdopt.compress`, `sdopt.evaluate` and `sdopt.bench` are also the modules that implement them: importing one of
those modules makes the package attribute the module, so each is made callable, calling the API's function."""

from __future__ import annotations

import sys
import types


def make_callable(module_name: str, function_name: str) -> None:
    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from sdopt import api

            return getattr(api, function_name)(*args, **kwargs)

    CallableModule.__call__.__doc__ = f"sdopt.api.{function_name}"
    sys.modules[module_name].__class__ = CallableModule
