"""TensorRT Python side: engine build (runtime/backend/tensorrt/engine_builder.py), backend (runtime/backend/tensorrt/predictor.py).

Runs anywhere:
- mypy checks the TensorRT modules against tensorrt-stubs (so a misspelled TensorRT API fails here),
  and a deliberately wrong attribute must make it fail (the check really sees TensorRT's types);
- the engine metadata refusals, the build planning (TensorRT 10 vs 11, precision flags, calibration
  cache, precision report, shapes) and the CLI's one-line errors, all without TensorRT.
Needs NVIDIA TensorRT, a CUDA GPU and the plugin library (skipped otherwise, with the reason):
- build engines from small exported graphs, run them, parity against ONNX Runtime.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from maskrcnn_deploy.runtime.backend.tensorrt import cuda_memory
from maskrcnn_deploy.runtime.backend.tensorrt.build_plan import (
    BuildOptions,
    GraphInfo,
    check_calibration_cache,
    inspect_graph,
    onnx_node_of_layer,
    parse_shape_specs,
    plan_build,
    read_precision_report,
    resolve_profile,
)
from maskrcnn_deploy.runtime.backend.tensorrt.environment import (
    NOT_INSTALLED,
    EngineMetadata,
    RuntimeEnvironment,
    TensorRTError,
    check_compatibility,
    check_plugin,
    is_real_tensorrt,
    read_metadata,
    sha256_file,
    verify_engine_file,
    write_metadata,
)
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.load import load

REPO = Path(__file__).resolve().parents[1]
TRT_MODULES = [f"maskrcnn_deploy.runtime.backend.tensorrt.{m}" for m in ("environment", "build_plan", "engine_builder",
                                                                      "predictor", "cuda_memory")
               ] + ["maskrcnn_deploy.runtime.cli.build"]
CUDA_STUBS = Path(__file__).resolve().parent / "stubs"  # cuda.bindings.runtime, which ships no types (see there)

try:
    import tensorrt as _trt
except (ImportError, OSError):
    _trt = None
HAVE_TRT = is_real_tensorrt(_trt)


def _gpu_missing() -> str | None:
    """None when cuda_memory.py reaches a CUDA GPU (through cuda-python or pycuda); else its one-line reason."""
    try:
        cuda_memory.device_properties()
    except cuda_memory.CudaUnavailableError as err:
        return str(err)
    return None


GPU_MISSING = _gpu_missing()
needs_gpu = pytest.mark.skipif(GPU_MISSING is not None, reason=f"needs a CUDA GPU: {GPU_MISSING}")
_missing = [what for what, ok in (("NVIDIA TensorRT (pip install tensorrt)", HAVE_TRT),
                                  (f"a CUDA GPU ({GPU_MISSING})", GPU_MISSING is None)) if not ok]
needs_tensorrt = pytest.mark.skipif(bool(_missing), reason=f"needs {' and '.join(_missing)}")
without_tensorrt = pytest.mark.skipif(HAVE_TRT, reason="checks the error shown when TensorRT is missing")


# ----------------------------------------------------------------------------- mypy against tensorrt-stubs
def _sanitized_stubs(dest: Path) -> Path:
    """Copy tensorrt-stubs' .pyi files, fixing what stops mypy from reading them (stubs 10.13):
    parameters named `in` and a non-default parameter after defaults are syntax errors, and the
    module-level `bool: DataType` shadows the builtin in every `-> bool` annotation."""
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or spec.origin is None:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps 'tensorrt-stubs>=10,<11')")
    site = Path(spec.origin).parent.parent
    for package in ("tensorrt", "tensorrt_bindings"):
        (dest / package).mkdir(parents=True, exist_ok=True)
        for pyi in (site / package).glob("*.pyi"):
            text = re.sub(r"([(,] )in: ", r"\1in_: ", pyi.read_text())
            text = text.replace("channel_axis: int)", "channel_axis: int = ...)")
            text = re.sub(r"^bool: .*$", "", text, flags=re.M)
            (dest / package / pyi.name).write_text(text)
    return dest


@pytest.fixture(scope="module")
def mypy_setup(tmp_path_factory):
    """(command prefix, env) running mypy on `maskrcnn_deploy.runtime.*` with the stubs above.

    The package's folders are mapped under a maskrcnn_deploy/ namespace folder so that mypy sees the
    real module names; errors inside the stubs and third-party packages are not ours and are off.
    """
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    root = tmp_path_factory.mktemp("mypy")
    stubs = _sanitized_stubs(root / "stubs")
    package = root / "src" / "maskrcnn_deploy"
    package.mkdir(parents=True)
    for folder in ("common", "model", "export", "plugins", "runtime", "calibration"):
        (package / folder).symlink_to(REPO / folder, target_is_directory=True)
    config = root / "mypy.ini"
    config.write_text(f"""[mypy]
mypy_path = {stubs}:{CUDA_STUBS}:{root / 'src'}
ignore_missing_imports = True
follow_imports = silent
disallow_untyped_defs = True
warn_unused_ignores = True
cache_dir = {root / 'cache'}

[mypy-tensorrt,tensorrt.*,tensorrt_bindings,tensorrt_bindings.*]
ignore_errors = True

[mypy-torch.*,torchvision.*,numpy.*,onnx.*,onnxruntime.*,onnxruntime_extensions.*,pycocotools.*,PIL.*]
follow_imports = skip
""")
    return [sys.executable, "-m", "mypy", "--config-file", str(config)], root


def _mypy(setup, modules: list[str]) -> subprocess.CompletedProcess:
    command, root = setup
    args = [a for m in modules for a in ("-m", m)]
    return subprocess.run(command + args, cwd=root, capture_output=True, text=True, timeout=600)


def test_tensorrt_modules_type_check_against_the_stubs(mypy_setup):
    result = _mypy(mypy_setup, TRT_MODULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_catches_a_misspelled_tensorrt_api(mypy_setup):
    """The check above is only worth something if TensorRT's names are really typed, not Any."""
    _, root = mypy_setup
    wrong = root / "src" / "wrong_api.py"
    wrong.write_text("import tensorrt as trt\n\n\ndef f(context: trt.IExecutionContext) -> bool:\n"
                     "    return context.execute_async_v2(0)\n\n\n"
                     "def g(config: trt.IBuilderConfig) -> None:\n"
                     "    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPAC, 1)\n")
    result = _mypy(mypy_setup, ["wrong_api"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert '"IExecutionContext" has no attribute "execute_async_v2"' in result.stdout
    assert 'has no attribute "WORKSPAC"' in result.stdout


def test_mypy_catches_a_wrong_cuda_runtime_call(mypy_setup):
    """cuda-python ships no types; mypy reads tests/stubs/cuda/bindings/runtime.pyi, so a misspelled
    function, enum member or a missing argument fails the check above."""
    _, root = mypy_setup
    wrong = root / "src" / "wrong_cuda.py"
    wrong.write_text("from cuda.bindings import runtime as cudart\n\n\ndef f(n: int) -> None:\n"
                     "    cudart.cudaMemcpyAsyn(0, 0, n, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, 0)\n"
                     "    cudart.cudaMemcpyAsync(0, 0, n, cudart.cudaMemcpyKind.cudaMemcpyHostToDevic, 0)\n"
                     "    cudart.cudaMalloc()\n")
    result = _mypy(mypy_setup, ["wrong_cuda"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Module has no attribute "cudaMemcpyAsyn"' in result.stdout
    assert 'has no attribute "cudaMemcpyHostToDevic"' in result.stdout
    assert 'Missing positional argument "size" in call to "cudaMalloc"' in result.stdout


def test_cuda_runtime_stubs_match_cuda_python():
    """Every function of the stub has the installed module's parameter names, in order; every enum member
    its value; every class its attributes (cuda.bindings imports without a GPU)."""
    cudart = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed (pip install "
                                                                 "cuda-python): nothing to check the stubs against")
    tree = ast.parse((CUDA_STUBS / "cuda" / "bindings" / "runtime.pyi").read_text())
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert len(functions) >= 12 and len(classes) == 4
    for node in functions:
        real = list(inspect.signature(getattr(cudart, node.name)).parameters)
        assert real == [a.arg for a in node.args.args], node.name
    for cls in classes:
        real_cls = getattr(cudart, cls.name)
        for item in cls.body:
            if isinstance(item, ast.Assign):  # enum member = value
                name = item.targets[0].id
                assert int(getattr(real_cls, name)) == ast.literal_eval(item.value), f"{cls.name}.{name}"
            elif isinstance(item, ast.AnnAssign):  # struct field
                assert hasattr(real_cls(), item.target.id), f"{cls.name}.{item.target.id}"
            elif isinstance(item, ast.FunctionDef):
                assert hasattr(real_cls, item.name), f"{cls.name}.{item.name}"


def test_the_tensorrt_backend_imports_no_torch():
    """Its own modules never import torch (the whole torch-free path is the torch-free CI step's test)."""
    folder = REPO / "runtime" / "backend" / "tensorrt"
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "torch" or n.startswith("torch.") for n in names), path.name


# ----------------------------------------------------------------------------- CUDA memory (cuda_memory.py)
def test_no_cuda_library_is_one_line_exit_3(monkeypatch):
    """Neither cuda-python nor pycuda importable: require_cuda says to pip install cuda-python, exit 3."""
    from maskrcnn_deploy.common.errors import BackendUnavailableError
    from maskrcnn_deploy.runtime.backend.tensorrt.environment import TensorRTUnavailableError, require_cuda

    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError
    monkeypatch.setattr(cuda_memory, "_API", [])
    with pytest.raises(TensorRTUnavailableError) as err:
        require_cuda()
    assert str(err.value) == cuda_memory.NOT_INSTALLED and "pip install cuda-python" in str(err.value)
    assert isinstance(err.value, BackendUnavailableError)


def test_pycuda_stands_in_when_cuda_python_is_missing(monkeypatch):
    """Without cuda-python, the same calls go to pycuda's documented API (a recording stand-in of it here:
    mem_alloc, pagelocked_empty, memcpy_htod/dtoh_async(dest, src, stream), Stream, the primary context)."""
    from types import ModuleType, SimpleNamespace

    calls: list[str] = []

    class Allocation:
        def __init__(self, nbytes: int) -> None:
            calls.append(f"mem_alloc {nbytes}")

        def __int__(self) -> int:
            return 0xD000

        def free(self) -> None:
            calls.append("DeviceAllocation.free")

    class Stream:
        handle = 0x5E

        def synchronize(self) -> None:
            calls.append("Stream.synchronize")

    class PagelockedHostAllocation:  # the `base` of pagelocked_empty's arrays
        def __init__(self, shape: tuple[int, ...], dtype: type) -> None:
            self.memory = np.zeros(shape, dtype)
            self.__array_interface__ = self.memory.__array_interface__

        def free(self) -> None:
            calls.append("PagelockedHostAllocation.free")

    def pagelocked_empty(shape: tuple[int, ...], dtype: type) -> np.ndarray:
        calls.append(f"pagelocked_empty {shape}")
        return np.asarray(PagelockedHostAllocation(shape, dtype))

    driver = ModuleType("pycuda.driver")
    driver.Error, driver.Stream, driver.mem_alloc, driver.pagelocked_empty = RuntimeError, Stream, Allocation, \
        pagelocked_empty
    driver.memcpy_htod_async = lambda dest, src, stream: calls.append(f"memcpy_htod_async {dest:#x} {stream.handle:#x}")
    driver.memcpy_dtoh_async = lambda dest, src, stream: calls.append(f"memcpy_dtoh_async {src:#x} {stream.handle:#x}")
    device = SimpleNamespace(name=lambda: "NVIDIA Stand-in", compute_capability=lambda: (8, 7))
    primary = ModuleType("pycuda.autoprimaryctx")
    primary.device = device
    package = ModuleType("pycuda")
    package.driver = driver
    for name, module in (("cuda", None), ("cuda.bindings", None), ("cuda.bindings.runtime", None), ("pycuda", package),
                         ("pycuda.driver", driver), ("pycuda.autoprimaryctx", primary)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(cuda_memory, "_API", [])
    assert cuda_memory.backend_name() == "pycuda"
    assert cuda_memory.device_properties() == ("NVIDIA Stand-in", "8.7")
    stream = cuda_memory.create_stream()
    device_buffer, host = cuda_memory.malloc(64), cuda_memory.pinned_empty(64)
    cuda_memory.copy_to_device_async(device_buffer, host, stream)
    cuda_memory.copy_to_host_async(host, device_buffer, stream)
    cuda_memory.synchronize(stream)
    cuda_memory.free(device_buffer)
    cuda_memory.free_pinned(host)
    cuda_memory.destroy_stream(stream)
    assert calls == ["mem_alloc 64", "pagelocked_empty (64,)", "memcpy_htod_async 0xd000 0x5e",
                     "memcpy_dtoh_async 0xd000 0x5e", "Stream.synchronize", "DeviceAllocation.free",
                     "PagelockedHostAllocation.free"]
    assert stream.handle == 0x5E and device_buffer.ptr == 0xD000 and stream.native is None


@pytest.mark.skipif(GPU_MISSING is None, reason="a CUDA GPU is visible here: checks the error shown without one")
def test_require_cuda_without_a_gpu_says_so():
    from maskrcnn_deploy.runtime.backend.tensorrt.environment import TensorRTUnavailableError, require_cuda

    if importlib.util.find_spec("cuda") is None and importlib.util.find_spec("pycuda") is None:
        pytest.skip("no CUDA library installed: test_no_cuda_library_is_one_line_exit_3 covers this machine")
    with pytest.raises(TensorRTUnavailableError, match=r"^no CUDA GPU is visible \((cudaGetDeviceCount|pycuda)"):
        require_cuda()


@needs_gpu
def test_cuda_memory_round_trip_on_the_gpu():
    """Through the real library: page-locked in, device, page-locked out on one stream, one synchronize."""
    name, capability = cuda_memory.device_properties()
    assert name and re.fullmatch(r"\d+\.\d+", capability)
    stream = cuda_memory.create_stream()
    data = np.arange(1 << 20, dtype=np.float32)
    host_in, host_out = cuda_memory.pinned_empty(data.nbytes), cuda_memory.pinned_empty(data.nbytes)
    device = cuda_memory.malloc(data.nbytes)
    try:
        np.copyto(host_in.view(np.float32), data)
        host_out.fill(0)
        cuda_memory.copy_to_device_async(device, host_in, stream)
        cuda_memory.copy_to_host_async(host_out, device, stream)
        cuda_memory.synchronize(stream)
        assert np.array_equal(host_out.view(np.float32), data)
    finally:
        cuda_memory.free(device)
        cuda_memory.free_pinned(host_in)
        cuda_memory.free_pinned(host_out)
        cuda_memory.destroy_stream(stream)


# ----------------------------------------------------------------------------- engine metadata (no TensorRT)
def _meta(engine: Path, plugin: Path | None = None, **changes) -> EngineMetadata:
    meta = EngineMetadata(
        tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", precision="fp32",
        precision_source="graph", strongly_typed=True,
        input_profile={"images": {"min": [1, 3, 128, 160], "opt": [1, 3, 128, 160], "max": [1, 3, 128, 160]},
                       "image_sizes": {"min": [1, 2], "opt": [1, 2], "max": [1, 2]}},
        plugin_library=str(plugin) if plugin else None, plugin_sha256=sha256_file(plugin) if plugin else None,
        onnx_path="model.onnx", onnx_sha256="0" * 64, engine_sha256=sha256_file(engine),
        engine_bytes=engine.stat().st_size, package_version="0.1.0", build_time_utc="2026-01-01T00:00:00Z",
        build_seconds=1.0, onnx_metadata={"maskrcnn_deploy": json.dumps({"config": {}, "graph_format": 2})})
    return dataclasses.replace(meta, **changes)


@pytest.fixture
def engine(tmp_path):
    """A fake engine (random bytes), its plugin library (random bytes) and valid metadata."""
    path, plugin = tmp_path / "model.engine", tmp_path / "libplugin.so"
    path.write_bytes(bytes(range(256)) * 40)
    plugin.write_bytes(b"\x7fELF plugin")
    write_metadata(path, _meta(path, plugin))
    return path, plugin


HERE = RuntimeEnvironment("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0")


def test_metadata_round_trip_and_matching_machine(engine):
    path, plugin = engine
    meta = read_metadata(path)
    assert meta == _meta(path, plugin)
    verify_engine_file(path, meta)
    check_compatibility(meta, HERE)
    check_plugin(meta, plugin)


def test_missing_engine_and_missing_metadata_are_refused(engine, tmp_path):
    path, _ = engine
    with pytest.raises(TensorRTError, match="engine not found"):
        read_metadata(tmp_path / "other.engine")
    path.with_name("model.engine.json").unlink()
    with pytest.raises(TensorRTError, match=r"has no metadata file model\.engine\.json.*maskrcnn-deploy build"):
        read_metadata(path)


@pytest.mark.parametrize("content, message", [("{not json", "not readable JSON"),
                                              ('{"schema": "other/1"}', "not maskrcnn-deploy engine metadata"),
                                              ('{"schema": "maskrcnn_deploy.engine/1"}', "lacks")])
def test_unreadable_metadata_is_refused(engine, content, message):
    path, _ = engine
    path.with_name("model.engine.json").write_text(content)
    with pytest.raises(TensorRTError, match=message):
        read_metadata(path)


def test_corrupt_or_truncated_engine_is_refused(engine):
    path, _ = engine
    meta = read_metadata(path)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(TensorRTError, match="corrupt or was replaced.*maskrcnn-deploy build model.onnx"):
        verify_engine_file(path, meta)
    path.write_bytes(bytes(data[:50]))
    with pytest.raises(TensorRTError, match="50 bytes, the build wrote 10240"):
        verify_engine_file(path, meta)


@pytest.mark.parametrize("env, message", [
    (RuntimeEnvironment("10.3.0.26", "NVIDIA H100 80GB HBM3", "9.0"), "built with TensorRT 10.13.0.35, this is "
                                                                      "TensorRT 10.3.0.26"),
    (RuntimeEnvironment("10.13.0.35", "NVIDIA A100-SXM4-80GB", "8.0"), "compute capability 9.0.*this GPU is 8.0"),
    (RuntimeEnvironment("10.13.0.35", "NVIDIA H100 PCIe", "9.0"), "built on a NVIDIA H100 80GB HBM3, this GPU is"),
])
def test_other_tensorrt_or_gpu_is_refused(engine, env, message):
    meta = read_metadata(engine[0])
    with pytest.raises(TensorRTError, match=message) as err:
        check_compatibility(meta, env)
    assert "rebuild it here with `maskrcnn-deploy build" in str(err.value) and "\n" not in str(err.value)


def test_other_or_missing_plugin_is_refused(engine, tmp_path):
    path, plugin = engine
    meta = read_metadata(path)
    other = tmp_path / "libother.so"
    other.write_bytes(b"another build")
    with pytest.raises(TensorRTError, match="differs from the one the engine was built with"):
        check_plugin(meta, other)
    with pytest.raises(TensorRTError, match="needs the TensorRT plugin library it was built with"):
        check_plugin(meta, tmp_path / "absent.so")
    check_plugin(dataclasses.replace(meta, plugin_sha256=None), None)  # standard-ops graph: no plugin


def test_load_checks_metadata_before_tensorrt(engine):
    """Through `load(path)`: metadata problems first, then a missing TensorRT, each one line."""
    path, plugin = engine
    plugin.write_bytes(b"rebuilt plugin")
    with pytest.raises(TensorRTError, match="differs from the one the engine was built with"):
        load(path)
    path.with_name("model.engine.json").unlink()
    with pytest.raises(TensorRTError, match="no metadata file"):
        load(path)


def test_input_size_from_profile_and_padding_to_it(engine):
    """Static profile -> fixed input size and batch; a dynamic one pads small batches with the image mean."""
    from maskrcnn_deploy.model.config import resnet18_fpn
    from maskrcnn_deploy.runtime.backend.tensorrt.predictor import TensorRTPredictor, engine_input_size
    from maskrcnn_deploy.runtime.predictor import PredictorError

    meta = read_metadata(engine[0])
    assert engine_input_size(meta) == ((128, 160), 1)
    meta.input_profile["images"] = {"min": [1, 3, 96, 96], "opt": [1, 3, 128, 160], "max": [2, 3, 192, 192]}
    assert engine_input_size(meta) == (None, None)
    predictor = object.__new__(TensorRTPredictor)  # only what _fit_profile reads; no TensorRT involved
    predictor.meta, predictor.config = meta, resnet18_fpn(4)
    batch = np.random.default_rng(0).random((2, 3, 64, 128), dtype=np.float32)
    padded = predictor._fit_profile(batch)
    assert padded.shape == (2, 3, 96, 128) and padded.dtype == np.float32 and np.array_equal(padded[:, :, :64], batch)
    mean = np.asarray(predictor.config.image_mean, dtype=np.float32).reshape(3, 1, 1)
    assert np.array_equal(padded[0, :, 64:, :], np.broadcast_to(mean, (3, 32, 128)))
    with pytest.raises(PredictorError, match=r"input images 3x3x96x96 is outside the engine's profile"):
        predictor._fit_profile(np.zeros((3, 3, 96, 96), dtype=np.float32))


@without_tensorrt
def test_load_without_tensorrt_says_so(engine):
    with pytest.raises(TensorRTError) as err:
        load(engine[0])
    assert str(err.value) == NOT_INSTALLED


# ----------------------------------------------------------------------------- build planning (no TensorRT)
def _graph(path: Path, custom: bool = True, dynamic: bool = False, half: bool = False, qdq: bool = False) -> Path:
    """A tiny graph with the deploy graph's inputs (enough for inspect_graph; not meant to run)."""
    dims = ["B", 3, "H", "W"] if dynamic else [1, 3, 32, 32]
    nodes = [helper.make_node("Identity", ["images"], ["features"], name="/identity")]
    if custom:
        nodes.append(helper.make_node("MultiLevelRoIAlign", ["image_sizes", "features", "features", "features",
                                                             "features"], ["pooled"], domain="maskrcnn_deploy",
                                      name="/roi_align"))
    if half:
        nodes.append(helper.make_node("Cast", ["features"], ["half"], to=TensorProto.FLOAT16, name="/cast"))
    if qdq:
        nodes.append(helper.make_node("QuantizeLinear", ["features", "scale"], ["q"], name="/quant"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims),
                     helper.make_tensor_value_info("image_sizes", TensorProto.FLOAT, [dims[0], 2])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, dims)],
        initializer=[helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("maskrcnn_deploy", 1)])
    helper.set_model_props(model, {"maskrcnn_deploy": '{"config": {}, "graph_format": 2}'})
    onnx.save(model, str(path))
    return path


def test_inspect_graph(tmp_path):
    info = inspect_graph(_graph(tmp_path / "a.onnx"))
    assert info.inputs == {"images": [1, 3, 32, 32], "image_sizes": [1, 2]}
    assert info.uses_custom_op and info.explicit_precision is None and "maskrcnn_deploy" in info.metadata
    info = inspect_graph(_graph(tmp_path / "b.onnx", custom=False, dynamic=True, half=True))
    assert info.inputs == {"images": [-1, 3, -1, -1], "image_sizes": [-1, 2]}
    assert not info.uses_custom_op and info.explicit_precision == "fp16"
    assert inspect_graph(_graph(tmp_path / "c.onnx", half=True, qdq=True)).explicit_precision == "int8"


def test_shape_specs():
    assert parse_shape_specs(["images:1x3x800x1344,image_sizes:1x2", "x:y:4"]) == {
        "images": (1, 3, 800, 1344), "image_sizes": (1, 2), "x:y": (4,)}
    for bad in ("images", "images:1x3xH", ":1x2"):
        with pytest.raises(TensorRTError, match="NAME:DIMS"):
            parse_shape_specs([bad])


def test_profile_static_dynamic_and_batch_inference():
    static = {"images": [1, 3, 32, 32], "image_sizes": [1, 2]}
    assert resolve_profile(static, {}, {}, {})["images"] == {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32],
                                                             "max": [1, 3, 32, 32]}
    with pytest.raises(TensorRTError, match=r"does not fit the graph's \[1x3x32x32\]"):
        resolve_profile(static, {}, {"images": (1, 3, 64, 64)}, {})
    dynamic = {"images": [-1, 3, -1, -1], "image_sizes": [-1, 2]}
    with pytest.raises(TensorRTError, match="input images has dynamic dimensions.*--min-shape"):
        resolve_profile(dynamic, {}, {}, {})
    profile = resolve_profile(dynamic, {"images": (1, 3, 96, 96)}, {"images": (2, 3, 128, 160)},
                              {"images": (4, 3, 160, 192)})
    assert list(profile) == ["images", "image_sizes"]
    assert profile["image_sizes"] == {"min": [1, 2], "opt": [2, 2], "max": [4, 2]}  # batch taken from images
    assert resolve_profile(dynamic, {}, {"images": (1, 3, 64, 64)}, {})["images"]["max"] == [1, 3, 64, 64]
    with pytest.raises(TensorRTError, match="--opt-shape alone or all of"):
        resolve_profile(dynamic, {"images": (1, 3, 64, 64)}, {}, {"images": (1, 3, 64, 64)})
    with pytest.raises(TensorRTError, match="min <= opt <= max"):
        resolve_profile(dynamic, {"images": (1, 3, 64, 64)}, {"images": (1, 3, 32, 32)}, {"images": (1, 3, 96, 96)})
    with pytest.raises(TensorRTError, match="no input 'image'.*images \\[Nx3xNxN\\]"):
        resolve_profile(dynamic, {}, {"image": (1, 3, 64, 64)}, {})


def _info(precision: str | None = None) -> GraphInfo:
    return GraphInfo(inputs={"images": [1, 3, 32, 32]}, uses_custom_op=True, explicit_precision=precision,
                     metadata={})


def test_plan_tensorrt_11_is_always_strongly_typed():
    plan = plan_build(_info("fp16"), BuildOptions(), "11.1.0.106")
    assert (plan.strongly_typed, plan.precision, plan.precision_source) == (True, "fp16", "graph")
    assert not plan.fp16_flag and not plan.int8_flag
    for options, message in ((BuildOptions(precision="fp16"), "removed builder precision flags"),
                             (BuildOptions(calibration_cache="x.cache"), "--calibration-cache"),
                             (BuildOptions(strongly_typed=False), "builds only strongly typed")):
        with pytest.raises(TensorRTError, match=message):
            plan_build(_info(), options, "11.1.0.106")


def test_plan_tensorrt_10(tmp_path):
    assert plan_build(_info("int8"), BuildOptions(), "10.13.0.35").strongly_typed  # graph precision: strongly typed
    assert not plan_build(_info(), BuildOptions(), "10.13.0.35").strongly_typed
    with pytest.raises(TensorRTError, match="strongly typed build takes every precision from the graph"):
        plan_build(_info("fp16"), BuildOptions(precision="fp16"), "10.13.0.35")
    plan = plan_build(_info(), BuildOptions(precision="fp16"), "10.13.0.35")
    assert (plan.precision_source, plan.fp16_flag, plan.int8_flag) == ("builder flags", True, False)
    with pytest.raises(TensorRTError, match="needs --calibration-cache"):
        plan_build(_info(), BuildOptions(precision="int8"), "10.13.0.35")
    with pytest.raises(TensorRTError, match="Q/DQ nodes"):
        plan_build(_info("int8"), BuildOptions(strongly_typed=False), "10.13.0.35")
    from maskrcnn_deploy.calibration.trt_cache import calibration_cache_text

    cache = tmp_path / "model.int8.cache"
    cache.write_text(calibration_cache_text({"images": 0.01}, trt_version="10.13.0", algorithm="MinMaxCalibration"))
    plan = plan_build(_info(), BuildOptions(precision="int8", calibration_cache=cache), "10.13.0.35")
    assert (plan.int8_flag, plan.fp16_flag, plan.calibrator) == (True, True, "MinMaxCalibration")
    with pytest.raises(TensorRTError, match="needs --precision int8"):
        plan_build(_info(), BuildOptions(calibration_cache=cache), "10.13.0.35")


def test_calibration_cache_header_must_fit(tmp_path):
    from maskrcnn_deploy.calibration.trt_cache import calibration_cache_text

    cache = tmp_path / "c.cache"
    cache.write_text(calibration_cache_text({"images": 0.01}, trt_version="10.3.0"))
    assert check_calibration_cache(cache, "10.3.0.26") == "EntropyCalibration2"
    with pytest.raises(TensorRTError, match="written for TensorRT version number 100300.*--trt-version 10.13.0"):
        check_calibration_cache(cache, "10.13.0.35")
    cache.write_text(calibration_cache_text({"images": 0.01}, trt_version="10.3.0", algorithm="LegacyCalibration"))
    with pytest.raises(TensorRTError, match="LegacyCalibration"):
        check_calibration_cache(cache, "10.3.0.26")


def test_precision_report(tmp_path):
    from maskrcnn_deploy.calibration.precision_report import NodePrecision, write_precision_report

    report = tmp_path / "m.precision.json"
    write_precision_report([NodePrecision("/conv", "Conv", "backbone", "fp16", "", 3.0),
                            NodePrecision("/exp", "Exp", None, "fp32", "fragile", None)], report)
    assert read_precision_report(report) == {"/conv": "fp16", "/exp": "fp32"}
    plan = plan_build(_info(), BuildOptions(precision_report=report), "10.13.0.35")
    assert plan.fp16_flag and plan.precision == "fp16" and plan.layer_precisions == {"/conv": "fp16", "/exp": "fp32"}
    report.write_text(json.dumps({"schema": "maskrcnn_deploy.precision/1", "layers": [{"node": "/c",
                                                                                      "precision": "int8"}]}))
    with pytest.raises(TensorRTError, match="add --precision int8"):
        plan_build(_info(), BuildOptions(precision_report=report), "10.13.0.35")
    report.write_text('{"schema": "x"}')
    with pytest.raises(TensorRTError, match="not a maskrcnn-deploy precision report"):
        read_precision_report(report)


def test_layer_to_onnx_node():
    assert onnx_node_of_layer("/backbone/conv1/Conv_1", "[ONNX Layer: /backbone/conv1/Conv]") == "/backbone/conv1/Conv"
    assert onnx_node_of_layer("/fpn/Add", "") == "/fpn/Add"


# ----------------------------------------------------------------------------- CLI bad input (no TensorRT)
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("maskrcnn-deploy: error: ")
    return err


def test_cli_missing_onnx(tmp_path, capsys):
    assert main(["build", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "m.engine")]) == 2
    assert "ONNX file not found" in _one_line_error(capsys)


def test_cli_missing_plugin(tmp_path, capsys):
    onnx_path = _graph(tmp_path / "model.onnx")
    missing = tmp_path / "libmissing.so"
    assert main(["build", str(onnx_path), "-o", str(tmp_path / "m.engine"), "--plugin", str(missing)]) == 2
    err = _one_line_error(capsys)
    assert f"TensorRT plugin library not found: {missing}" in err
    assert "python -m maskrcnn_deploy.plugins.tensorrt.build_library" in err


def test_cli_default_plugin_missing(tmp_path, capsys):
    try:
        from maskrcnn_deploy.plugins.tensorrt.build_library import default_plugin_library
        if Path(default_plugin_library()).is_file():
            pytest.skip("the default plugin library is built here")
    except ImportError:
        pass
    # not built here: the backend is incomplete (3); an explicit --plugin that does not exist is bad input (2)
    assert main(["build", str(_graph(tmp_path / "model.onnx")), "-o", str(tmp_path / "m.engine")]) == 3
    assert "--plugin PATH" in _one_line_error(capsys)
    missing = tmp_path / "missing.so"
    assert main(["build", str(_graph(tmp_path / "model.onnx", custom=True)), "-o", str(tmp_path / "m.engine"),
                 "--plugin", str(missing)]) == 2
    assert str(missing) in _one_line_error(capsys)


def test_cli_bad_shapes(tmp_path, capsys):
    onnx_path = _graph(tmp_path / "model.onnx", custom=False, dynamic=True)
    assert main(["build", str(onnx_path), "-o", str(tmp_path / "m.engine")]) == 2
    assert "dynamic dimensions" in _one_line_error(capsys)
    assert main(["build", str(onnx_path), "-o", str(tmp_path / "m.engine"), "--opt-shape", "images:1x3"]) == 2
    assert "does not fit" in _one_line_error(capsys)


@without_tensorrt
def test_cli_without_tensorrt(tmp_path, capsys):
    plugin = tmp_path / "libplugin.so"
    plugin.write_bytes(b"\x7fELF")
    for extra in ([], ["--plugin", str(plugin)]):  # a graph without / with the custom node
        onnx_path = _graph(tmp_path / "model.onnx", custom=bool(extra))
        assert main(["build", str(onnx_path), "-o", str(tmp_path / "m.engine"), *extra]) == 3  # backend missing
        assert _one_line_error(capsys).endswith(NOT_INSTALLED)
    assert not (tmp_path / "m.engine").exists()


# ----------------------------------------------------------------------------- with TensorRT and a GPU
@pytest.fixture(scope="module")
def plugin_library(tmp_path_factory):
    try:
        from maskrcnn_deploy.plugins.tensorrt.build_library import (
            PluginBuildError,
            build_plugin_library,
            default_plugin_library,
        )
    except ImportError:
        pytest.skip("maskrcnn_deploy.plugins.tensorrt.build_library (the plugin build) is not available")
    default = Path(default_plugin_library())
    if default.is_file():
        return default
    try:
        return Path(build_plugin_library(tmp_path_factory.mktemp("plugin")))
    except PluginBuildError as error:
        pytest.skip(f"the plugin library cannot be built here: {error}")


@pytest.fixture(scope="module")
def small_model(small_r18, tmp_path_factory):
    """The shared seeded ResNet-18-FPN at 128x160 (tests/conftest.py `small_r18`) exported static and dynamic
    (custom op), and 3 synthetic val images."""
    from maskrcnn_deploy.model.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("trt")
    static, dynamic = small_r18.graph("custom"), small_r18.graph("custom", dynamic=True)
    paths = make_synthetic_dataset(root / "data", num_train=1, num_val=3, seed=3, image_size=(150, 190))
    coco = json.loads(Path(paths["val"]).read_text())
    return static, dynamic, [root / "data" / "val" / im["file_name"] for im in coco["images"]]


@needs_tensorrt
def test_engine_matches_onnxruntime(small_model, plugin_library, tmp_path, capsys):
    from maskrcnn_deploy.runtime import parity

    static, _, images = small_model
    engine, timing = tmp_path / "r18.engine", tmp_path / "timing.cache"
    assert main(["build", str(static), "-o", str(engine), "--plugin", str(plugin_library),
                 "--timing-cache", str(timing), "--opt-level", "1", "--workspace-mib", "1024"]) == 0
    meta = read_metadata(engine)
    assert meta.tensorrt_version == _trt.__version__ and meta.plugin_sha256 == sha256_file(plugin_library)
    assert meta.onnx_sha256 == sha256_file(static) and timing.stat().st_size > 0
    assert meta.precision == "fp32" and meta.tf32 is False  # strict float32: TF32 cleared (no --tf32)
    assert meta.input_profile["images"]["min"] == meta.input_profile["images"]["max"] == [1, 3, 128, 160]
    trt_predictor, ort_predictor = load(engine), load(static)
    assert trt_predictor.backend == "tensorrt" and trt_predictor.input_size == (128, 160)
    ref, test = ort_predictor.predict(images), trt_predictor.predict(images)
    report = parity.check_parity(ref, test, parity.tolerances_from("fp32"))
    assert report.passed, report.failures
    assert report.ref_detections > 0 and report.matched == report.ref_detections


@needs_tensorrt
def test_dynamic_engine_and_refused_plugin(small_model, plugin_library, tmp_path):
    from maskrcnn_deploy.runtime import parity

    _, dynamic, images = small_model
    engine = tmp_path / "r18_dynamic.engine"
    assert main(["build", str(dynamic), "-o", str(engine), "--plugin", str(plugin_library), "--opt-level", "1",
                 "--min-shape", "images:1x3x96x96", "--opt-shape", "images:1x3x128x160",
                 "--max-shape", "images:2x3x192x192"]) == 0
    meta = read_metadata(engine)
    assert meta.input_profile["image_sizes"] == {"min": [1, 2], "opt": [1, 2], "max": [2, 2]}
    predictor = load(engine)
    assert predictor.input_size is None and predictor.fixed_batch is None
    report = parity.check_parity(load(dynamic).predict(images), predictor.predict(images, batch_size=2),
                                 parity.tolerances_from("fp32"))
    assert report.passed, report.failures
    copy = tmp_path / "libcopy.so"
    copy.write_bytes(plugin_library.read_bytes() + b"\0")
    from maskrcnn_deploy.runtime.backend.tensorrt.predictor import TensorRTPredictor
    with pytest.raises(TensorRTError, match="differs from the one the engine was built with"):
        TensorRTPredictor(engine, plugin=copy)


@needs_tensorrt
@pytest.mark.skipif(HAVE_TRT and int(_trt.__version__.split(".")[0]) >= 11,
                    reason="the weakly typed --precision path exists only in TensorRT 10")
def test_tensorrt_10_weakly_typed_fp16(small_model, plugin_library, tmp_path):
    from maskrcnn_deploy.runtime import parity

    static, _, images = small_model
    engine = tmp_path / "r18.fp16.engine"
    assert main(["build", str(static), "-o", str(engine), "--plugin", str(plugin_library), "--opt-level", "1",
                 "--no-strongly-typed", "--precision", "fp16"]) == 0
    meta = read_metadata(engine)
    assert (meta.precision, meta.precision_source, meta.strongly_typed) == ("fp16", "builder flags", False)
    report = parity.check_parity(load(static).predict(images), load(engine).predict(images),
                                 parity.tolerances_from("fp16"))
    assert report.passed, report.failures
