"""The adapters by the diffusers class names they handle."""

from __future__ import annotations

from sdopt.contract.errors import SdoptError

_ADAPTERS: dict[str, object] = {}
# the families a compression pass supports unless it declares others: the convolutional generation
PASS_FAMILIES = ("unet",)


def register(adapter) -> None:
    for class_name in adapter.handles:
        _ADAPTERS[class_name] = adapter


def backbone_of(model):
    """The adapter of a denoiser module (by its class or a base class), or one error naming the class."""
    for cls in type(model).__mro__:
        if cls.__name__ in _ADAPTERS:
            return _ADAPTERS[cls.__name__]
    raise SdoptError(f"no backbone adapter handles a {type(model).__name__}; known: " + ", ".join(_ADAPTERS))


def backbone_of_pipeline(pipe):
    """The adapter of a pipeline's denoiser: the first of its components an adapter handles."""
    for module in getattr(pipe, "components", {}).values():
        if module is not None and any(cls.__name__ in _ADAPTERS for cls in type(module).__mro__):
            return backbone_of(module)
    raise SdoptError(f"no backbone adapter handles a component of {type(pipe).__name__}; known: "
                     + ", ".join(_ADAPTERS))
