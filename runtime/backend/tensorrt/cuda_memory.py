"""Device memory, host-device copies and one CUDA stream for the TensorRT backend, without PyTorch.

Two libraries can do this; the first one importable is used:
- cuda-python's runtime API (`from cuda.bindings import runtime as cudart`, cuda-python 12.6.1 or later),
  the calls NVIDIA's TensorRT samples make since TensorRT 10.13 (samples/python/common_runtime.py):
  cudaMalloc/cudaFree, cudaMallocHost/cudaFreeHost, cudaMemcpyAsync, cudaStreamCreate/Synchronize/Destroy,
  cudaGetDeviceProperties;
- pycuda (`pycuda.driver`, on the device's primary context, which the CUDA runtime and TensorRT share):
  mem_alloc, pagelocked_empty, memcpy_htod_async/memcpy_dtoh_async, Stream.

    stream = create_stream()
    device = malloc(nbytes)                    # DeviceBuffer: .ptr for set_tensor_address
    host = pinned_empty(nbytes)                # page-locked uint8 [nbytes]: async copies need it
    copy_to_device_async(device, host, stream)
    ... context.execute_async_v3(stream.handle) ...
    copy_to_host_async(host, device, stream)
    synchronize(stream)                        # the only wait; `host` holds the result after it
    free(device); free_pinned(host); destroy_stream(stream)

Nothing is imported from either library until the first call, so this module imports anywhere. Neither
installed: `CudaUnavailableError` (exit 3) naming `pip install cuda-python`. A failing call: `CudaError`
naming the call and CUDA's error name.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskrcnn_deploy.common.errors import BackendUnavailableError, BadInputError

__all__ = ["CudaError", "CudaUnavailableError", "DeviceBuffer", "Stream", "backend_name", "device_properties",
           "create_stream", "destroy_stream", "malloc", "free", "pinned_empty", "free_pinned",
           "copy_to_device_async", "copy_to_host_async", "synchronize", "NOT_INSTALLED"]

NOT_INSTALLED = ("neither cuda-python nor pycuda is installed: the TensorRT backend needs one of them for GPU memory "
                 "(pip install cuda-python, or pip install 'maskrcnn-deploy[tensorrt]')")


class CudaError(BadInputError, RuntimeError):
    """A CUDA call failed (out of memory, a failed launch reported later); one line naming the call."""


class CudaUnavailableError(BackendUnavailableError):
    """No CUDA library to call, or no usable GPU behind it (exit code 3)."""


@dataclass
class DeviceBuffer:
    """`nbytes` of device memory at address `ptr` (what TensorRT's `set_tensor_address` takes)."""

    ptr: int
    nbytes: int
    owner: Any = None      # pycuda's DeviceAllocation (the memory lives as long as it); None with cuda-python


@dataclass
class Stream:
    """A CUDA stream: `handle` is the cudaStream_t as an integer (`execute_async_v3`'s argument)."""

    handle: int
    native: Any            # cuda.bindings.runtime.cudaStream_t or pycuda.driver.Stream


class _CudaPython:
    """The calls on cuda-python's runtime API. Each method imports `cuda.bindings.runtime` itself (a lookup
    once imported), so that mypy checks every call against tests/stubs/cuda/bindings/runtime.pyi."""

    name = "cuda-python"

    def __init__(self) -> None:
        from cuda.bindings import runtime  # noqa: F401  (ImportError here: not installed)

    @staticmethod
    def check(call: str, result: tuple[Any, ...]) -> Any:
        """cuda-python returns (cudaError_t, value...): the value, or CudaError naming the call."""
        from cuda.bindings import runtime as cudart

        if result[0] != cudart.cudaError_t.cudaSuccess:
            raise CudaError(f"CUDA call {call} failed: {_CudaPython.error_name(result[0])}")
        return result[1] if len(result) > 1 else None

    @staticmethod
    def error_name(err: Any) -> str:
        from cuda.bindings import runtime as cudart

        _, name = cudart.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(err)

    def device_properties(self) -> tuple[str, str]:
        from cuda.bindings import runtime as cudart

        err, count = cudart.cudaGetDeviceCount()
        if err != cudart.cudaError_t.cudaSuccess:
            raise CudaUnavailableError(_no_gpu(f"cudaGetDeviceCount: {self.error_name(err)}", self.driver_too_old()))
        if not count:
            raise CudaUnavailableError(_no_gpu("cudaGetDeviceCount: 0 devices"))
        device = self.check("cudaGetDevice", cudart.cudaGetDevice())
        props = self.check("cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(device))
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return name, f"{props.major}.{props.minor}"

    @staticmethod
    def driver_too_old() -> str:
        """"" when no driver is installed (cudaDriverGetVersion gives 0) or it is new enough; else what the
        driver supports and what this cuda-python needs, e.g. "the driver supports CUDA 12.4, cuda-python
        needs 13.0"."""
        from cuda.bindings import runtime as cudart

        _, driver = cudart.cudaDriverGetVersion()
        _, runtime = cudart.cudaRuntimeGetVersion()
        if not driver or not runtime or driver >= runtime:
            return ""
        return (f"the driver supports CUDA {driver // 1000}.{driver % 1000 // 10}, cuda-python needs "
                f"{runtime // 1000}.{runtime % 1000 // 10}")

    def create_stream(self) -> Stream:
        from cuda.bindings import runtime as cudart

        stream = self.check("cudaStreamCreate", cudart.cudaStreamCreate())
        return Stream(int(stream), stream)

    def destroy_stream(self, stream: Stream) -> None:
        from cuda.bindings import runtime as cudart

        self.check("cudaStreamDestroy", cudart.cudaStreamDestroy(stream.native))

    def malloc(self, nbytes: int) -> DeviceBuffer:
        from cuda.bindings import runtime as cudart

        return DeviceBuffer(int(self.check("cudaMalloc", cudart.cudaMalloc(nbytes))), nbytes)

    def free(self, buffer: DeviceBuffer) -> None:
        from cuda.bindings import runtime as cudart

        self.check("cudaFree", cudart.cudaFree(buffer.ptr))

    def pinned_empty(self, nbytes: int) -> np.ndarray:
        from cuda.bindings import runtime as cudart

        ptr = int(self.check("cudaMallocHost", cudart.cudaMallocHost(nbytes)))
        return np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))

    def free_pinned(self, array: np.ndarray) -> None:
        from cuda.bindings import runtime as cudart

        self.check("cudaFreeHost", cudart.cudaFreeHost(array.ctypes.data))

    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        from cuda.bindings import runtime as cudart

        kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check("cudaMemcpyAsync", cudart.cudaMemcpyAsync(dst.ptr, src.ctypes.data, src.nbytes, kind,
                                                             stream.native))

    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        from cuda.bindings import runtime as cudart

        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check("cudaMemcpyAsync", cudart.cudaMemcpyAsync(dst.ctypes.data, src.ptr, dst.nbytes, kind,
                                                             stream.native))

    def synchronize(self, stream: Stream) -> None:
        from cuda.bindings import runtime as cudart

        self.check("cudaStreamSynchronize", cudart.cudaStreamSynchronize(stream.native))


class _PyCuda:
    """The same calls on pycuda, in the device's primary context (`pycuda.autoprimaryctx`, the context the
    CUDA runtime and so TensorRT use; a pycuda without that module gets `pycuda.autoinit`'s own context)."""

    name = "pycuda"

    def __init__(self) -> None:
        from pycuda import driver

        self.driver = driver
        self.device: Any = None

    def _context(self) -> Any:
        """The device, once its context is current (creating it is what fails without a GPU)."""
        if self.device is None:
            try:
                import pycuda.autoprimaryctx as ctx
            except ImportError:
                import pycuda.autoinit as ctx
            self.device = ctx.device
        return self.device

    def device_properties(self) -> tuple[str, str]:
        try:
            device = self._context()
        except self.driver.Error as err:
            raise CudaUnavailableError(_no_gpu(f"pycuda: {err}")) from None
        major, minor = device.compute_capability()
        return str(device.name()), f"{major}.{minor}"

    def call(self, what: str, fn: Any, *args: Any) -> Any:
        self._context()
        try:
            return fn(*args)
        except self.driver.Error as err:
            raise CudaError(f"CUDA call {what} (pycuda) failed: {err}") from None

    def create_stream(self) -> Stream:
        stream = self.call("Stream", self.driver.Stream)
        return Stream(int(stream.handle), stream)

    def destroy_stream(self, stream: Stream) -> None:
        stream.native = None  # pycuda destroys a stream with its last reference

    def malloc(self, nbytes: int) -> DeviceBuffer:
        allocation = self.call("mem_alloc", self.driver.mem_alloc, nbytes)
        return DeviceBuffer(int(allocation), nbytes, allocation)

    def free(self, buffer: DeviceBuffer) -> None:
        self.call("DeviceAllocation.free", buffer.owner.free)
        buffer.owner = None

    def pinned_empty(self, nbytes: int) -> np.ndarray:
        return self.call("pagelocked_empty", self.driver.pagelocked_empty, (nbytes,), np.uint8)

    def free_pinned(self, array: np.ndarray) -> None:
        allocation: Any = array.base  # pagelocked_empty's array: its base is the PagelockedHostAllocation
        self.call("PagelockedHostAllocation.free", allocation.free)

    def copy_to_device_async(self, dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
        self.call("memcpy_htod_async", self.driver.memcpy_htod_async, dst.ptr, src, stream.native)

    def copy_to_host_async(self, dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
        self.call("memcpy_dtoh_async", self.driver.memcpy_dtoh_async, dst, src.ptr, stream.native)

    def synchronize(self, stream: Stream) -> None:
        self.call("Stream.synchronize", stream.native.synchronize)


_API: list[_CudaPython | _PyCuda] = []  # the library chosen on first use


def _no_gpu(detail: str, old_driver: str = "") -> str:
    """The one line for a machine whose CUDA library finds no usable GPU (`old_driver`: see driver_too_old)."""
    fix = (f"{old_driver}: install the cuda-python of the driver's CUDA major (e.g. pip install "
           "'cuda-python>=12.6.1,<13' for a CUDA 12 driver)" if old_driver
           else "TensorRT needs an NVIDIA GPU with a working driver; run this on a GPU machine")
    return f"no CUDA GPU is visible ({detail}): {fix}"


def _api() -> _CudaPython | _PyCuda:
    """cuda-python if importable, else pycuda, else CudaUnavailableError (saying why a present one failed)."""
    if not _API:
        broken = []
        for backend in (_CudaPython, _PyCuda):
            try:
                _API.append(backend())
                break
            except ModuleNotFoundError as err:
                if not (err.name or "").startswith(("cuda", "pycuda")):
                    broken.append(f"{backend.name}: {err}")
            except (ImportError, OSError) as err:  # installed, but its CUDA library did not load
                broken.append(f"{backend.name}: {err}")
        else:
            if broken:
                raise CudaUnavailableError(f"the CUDA Python bindings cannot be loaded ({'; '.join(broken)}): "
                                           "pip install cuda-python (its CUDA major matching the driver's)")
            raise CudaUnavailableError(NOT_INSTALLED)
    return _API[0]


def backend_name() -> str:
    """"cuda-python" or "pycuda": the library the calls below go to."""
    return _api().name


def device_properties() -> tuple[str, str]:
    """(name, compute capability "major.minor") of the current CUDA device; CudaUnavailableError without one."""
    return _api().device_properties()


def create_stream() -> Stream:
    """A new CUDA stream (cudaStreamCreate)."""
    return _api().create_stream()


def destroy_stream(stream: Stream) -> None:
    """Destroy a stream from create_stream once nothing is queued on it."""
    _api().destroy_stream(stream)


def malloc(nbytes: int) -> DeviceBuffer:
    """`nbytes` of device memory (cudaMalloc)."""
    return _api().malloc(nbytes)


def free(buffer: DeviceBuffer) -> None:
    """Release memory from malloc (cudaFree)."""
    _api().free(buffer)


def pinned_empty(nbytes: int) -> np.ndarray:
    """Page-locked host memory as uint8 [nbytes] (cudaMallocHost); view it with `.view(dtype)`."""
    return _api().pinned_empty(nbytes)


def free_pinned(array: np.ndarray) -> None:
    """Release an array from pinned_empty (the array itself, not a view of it)."""
    _api().free_pinned(array)


def copy_to_device_async(dst: DeviceBuffer, src: np.ndarray, stream: Stream) -> None:
    """Queue a copy of the C-contiguous page-locked `src` (all its bytes) to `dst` on `stream`."""
    _api().copy_to_device_async(dst, src, stream)


def copy_to_host_async(dst: np.ndarray, src: DeviceBuffer, stream: Stream) -> None:
    """Queue a copy of `dst.nbytes` bytes from `src` into the C-contiguous page-locked `dst` on `stream`."""
    _api().copy_to_host_async(dst, src, stream)


def synchronize(stream: Stream) -> None:
    """Wait until everything queued on `stream` has run (cudaStreamSynchronize)."""
    _api().synchronize(stream)
