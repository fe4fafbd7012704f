"""The compression passes, one module each. `sdopt.compress(model, recipe, out, **options)` is also the Python
API's entry point (`sdopt.api.compress`): apply a recipe and write the artifact folder."""

from sdopt.callable_module import make_callable

make_callable(__name__, "compress")
