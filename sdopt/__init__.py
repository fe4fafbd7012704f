"""sdopt: compress, export and run Stable Diffusion models.

    sdopt.compress(model, recipe, out, **options) -> Path      apply a recipe, write an artifact folder
    sdopt.Pipeline(folder)(prompt, seed=...)  -> Generation    generate (.image, .save(path)); torch-free
    sdopt.evaluate(folder, ...) -> dict                        quality against the fp32 reference
    sdopt.bench([folder, ...], ...) -> dict                    speed and memory, with peers

Each loads what it needs when first used: `import sdopt` imports neither torch nor an engine.
"""

import importlib as _importlib
import logging as _logging

from sdopt.contract.version import __version__

__all__ = ["compress", "Pipeline", "evaluate", "bench", "SdoptError", "__version__"]


class _ImportNoise(_logging.Filter):
    """diffusers logs a warning at import when two distributions provide one package (optimum and optimum-intel
    both ship `optimum`): a fact of the install, not of the user's command."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Multiple distributions found for package")


_logging.getLogger("diffusers.utils.import_utils").addFilter(_ImportNoise())


def __getattr__(name: str):
    if name in ("evaluate", "bench"):
        from sdopt.app import api

        return getattr(api, name)
    if name == "compress":  # the pass package, callable as the API's compress (compress/__init__.py)
        return _importlib.import_module("sdopt.compress")
    if name == "Pipeline":
        from sdopt.runtime.pipeline import Pipeline

        return Pipeline
    if name == "SdoptError":
        from sdopt.contract.errors import SdoptError

        return SdoptError
    raise AttributeError(f"module 'sdopt' has no attribute {name!r}")
