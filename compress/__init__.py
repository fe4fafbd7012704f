"""The compression passes, one module each, registered in `registry`. The package is also the Python API's
`sdopt.compress(model, recipe, out, **options)`: importing any pass makes `sdopt.compress` this package, so the
package is callable, handing the call to the application's `sdopt.app.api.compress` (the one reference from a
stage folder to the application, made when called)."""

import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from sdopt.app.api import compress

        return compress(*args, **kwargs)


_CallablePackage.__call__.__doc__ = "sdopt.app.api.compress"
_sys.modules[__name__].__class__ = _CallablePackage
