"""Inference engines that run the artifact's graphs. Each backend: `load(path) -> Model` where a Model
has `input_names` and `run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]`."""

from sdopt.errors import SdoptError

BACKENDS = ("onnxruntime", "openvino", "tensorrt")


def load(backend: str, path, **options):
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
