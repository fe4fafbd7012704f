"""Inference engines that run the artifact's graphs. Each backend: `load(path) -> Model` where a Model
has `inputs` / `outputs` ({name: (dtype name, rank)}) and `run(feeds: dict[str, np.ndarray]) ->
dict[str, np.ndarray]`; engine failures come out as one-line SdoptErrors."""

from sdopt.contract.engine_messages import engine_message
from sdopt.contract.errors import SdoptError

__all__ = ["BACKENDS", "load", "engine_message"]
BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def load(backend: str, path, **options):
    """The backend's Model for the graph at `path` (each backend module is imported on first use: its engine
    is an optional dependency)."""
    if backend == "onnxruntime":
        from .onnxruntime import OrtModel

        return OrtModel(path, **options)
    if backend == "openvino":
        from .openvino import OvModel

        return OvModel(path, **options)
    if backend == "tensorrt":
        from .tensorrt import TrtModel

        return TrtModel(path, **options)
    raise SdoptError(f"unknown backend '{backend}'; available: " + ", ".join(BACKENDS))

