"""TensorRT backend: engines built by `sdopt build DIR --format tensorrt`, run with device buffers allocated
once at the profile's largest shapes (TensorRT 10 name-based I/O, cuda-python for memory and streams)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdopt.contract.engine_messages import engine_message
from sdopt.contract.errors import SdoptError
from sdopt.contract.sampling import interval_index


def interval_of(timestep: float, per_timestep: float, intervals: int) -> int:
    """The timestep interval an interval-scale graph computes, in the same float32 arithmetic."""
    return int(interval_index(timestep, intervals, per_timestep))


def _cuda():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as err:
            raise SdoptError("the tensorrt backend needs cuda-python: pip install 'sdopt[tensorrt]'") from err
    return cudart


def _check(result):
    err, *values = result
    if int(err) != 0:
        raise SdoptError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


class TrtEngine:
    def __init__(self, path: Path):
        try:
            import tensorrt as trt
        except ImportError as err:
            raise SdoptError("the tensorrt backend needs TensorRT: pip install 'sdopt[tensorrt]'") from err
        self.cudart = cudart = _cuda()
        try:
            self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(path).read_bytes())
        except Exception as err:
            raise SdoptError(f"{path}: TensorRT cannot load this engine ({engine_message(err)})") from err
        if self.engine is None:
            raise SdoptError(f"{path}: TensorRT cannot load this engine (built for another GPU or version?)")
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.inputs = {n: (self.dtypes[n].name, len(self.engine.get_tensor_shape(n))) for n in self.input_names}
        self.outputs = {n: (self.dtypes[n].name, len(self.engine.get_tensor_shape(n))) for n in self.output_names}
        for name in self.input_names:  # the largest shapes decide the buffers' sizes
            self.context.set_input_shape(name, tuple(self.engine.get_tensor_profile_shape(name, 0)[2]))
        self.buffers = {}
        for name in names:
            nbytes = int(np.prod(tuple(self.context.get_tensor_shape(name)))) * self.dtypes[name].itemsize
            self.buffers[name] = _check(cudart.cudaMalloc(max(nbytes, 1)))
            self.context.set_tensor_address(name, int(self.buffers[name]))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self.cudart
        host = {}
        for name in self.input_names:
            array = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            host[name] = array  # alive until the copy is done
            self.context.set_input_shape(name, array.shape)
            _check(cudart.cudaMemcpyAsync(self.buffers[name], array.ctypes.data, array.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.execute_async_v3(int(self.stream)):
            raise SdoptError("TensorRT could not run the engine")
        outputs = {}
        for name in self.output_names:
            out = np.empty(tuple(self.context.get_tensor_shape(name)), self.dtypes[name])
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, self.buffers[name], out.nbytes,
                                          cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
            outputs[name] = out
        _check(cudart.cudaStreamSynchronize(self.stream))
        return {name: out.astype(np.float32) if out.dtype == np.float16 else out for name, out in outputs.items()}

    def __del__(self):
        for pointer in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(pointer)


class TrtModel:
    """A component's engine, or for an interval-scale denoiser one engine per timestep interval."""

    def __init__(self, path: Path, engine_paths: list[Path] | None = None, interval_per_timestep: float | None = None,
                 int8_weight_bits: int | None = None, io_names: tuple | None = None):
        if not engine_paths:
            raise SdoptError(f"{path}: no TensorRT engine; build one first (sdopt build DIR --format tensorrt)")
        self.engines = [TrtEngine(p) for p in engine_paths]
        self.per_timestep = interval_per_timestep
        self.input_names, self.output_names = self.engines[0].input_names, self.engines[0].output_names
        self.inputs, self.outputs = self.engines[0].inputs, self.engines[0].outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        engine = self.engines[0]
        if len(self.engines) > 1:
            engine = self.engines[interval_of(float(feeds["timestep"].reshape(-1)[0]), self.per_timestep,
                                              len(self.engines))]
        return engine.run(feeds)
