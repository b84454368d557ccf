"""`maskrcnn-deploy package triton` (runtime/triton/): the repository Triton would load, checked without a server.

- every config.pbtxt is parsed by Triton's own schema (tritonclient's model_config_pb2, google.protobuf.text_format);
- the ensemble is walked step by step as Triton chains it: the Python-backend steps' `TritonPythonModel` (loaded
  from the repository's model.py, with a minimal stand-in for `triton_python_backend_utils`), the graph in the
  project's ONNX Runtime backend between them; every tensor a step returns has the type and rank its config
  declares, and the detections equal `predict`'s on the same images (dynamic batch and fixed batch graphs);
- a custom-op graph is refused (exit 2), and an engine's batching comes from its optimisation profile (a stand-in
  engine file and metadata: engines cannot be built without a GPU).

Model: a seeded ResNet-18-FPN with small heads at 128-160 px (tests/conftest.py `small_heads_r18`), one standard-ops
export with a dynamic batch; the fixed-batch graph is the same graph with its input shapes fixed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2  # Triton's ModelConfig schema (the [triton] extra)

from maskrcnn_deploy.common.files import file_digest
from maskrcnn_deploy.export.graph_io import metadata_of, read_graph_info, write_graph_info
from maskrcnn_deploy.model.config import MaskRCNNConfig
from maskrcnn_deploy.model.fit import Fit
from maskrcnn_deploy.plugins.op_spec import DOMAIN, OP_TYPE
from maskrcnn_deploy.runtime.backend.onnxrt import OnnxPredictor
from maskrcnn_deploy.runtime.cli import main
from maskrcnn_deploy.runtime.cli.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from maskrcnn_deploy.runtime.triton.stages import decode_rles

IMAGES = sorted((Path(__file__).parent / "data" / "detectron2" / "images").glob("scene_[01].png"))  # 640x480, 640x427
NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_STRING": np.object_}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def graphs(small_heads_r18, tmp_path_factory):
    """{"dynamic": standard-ops graph with a dynamic batch (tests/conftest.py `small_heads_r18`, shared), "static":
    the same with its inputs fixed at 1x3x128x160 (and the fit of that canvas recorded, as a static export records
    it)}."""
    root = tmp_path_factory.mktemp("triton")
    dynamic = small_heads_r18.graph("standard", dynamic=True)
    model = onnx.load(str(dynamic))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        fixed = [1, 3, 128, 160] if value.name == "images" else [1] + [d.dim_value for d in dims[1:]]
        for dim, size in zip(dims, fixed):
            dim.Clear()
            dim.dim_value = size
    info = read_graph_info(model, "static")
    write_graph_info(model, {**info, "fit": Fit.of(MaskRCNNConfig.from_dict(info["config"]), (128, 160)).to_dict()})
    onnx.save(model, str(root / "static.onnx"))
    return {"dynamic": dynamic, "static": root / "static.onnx"}


@pytest.fixture
def pb_utils(monkeypatch):
    """A minimal stand-in for Triton's `triton_python_backend_utils` (what runtime/triton/model.py calls)."""
    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError(Exception):
        def message(self):
            return str(self)

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class InferenceRequest:
        def __init__(self, inputs):
            self.inputs = {tensor.name(): tensor for tensor in inputs}

    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor, module.TritonError, module.InferenceResponse = Tensor, TritonError, InferenceResponse
    module.InferenceRequest = InferenceRequest
    module.get_input_tensor_by_name = lambda request, name: request.inputs.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    monkeypatch.delitem(sys.modules, "maskrcnn_deploy.runtime.triton.model", raising=False)
    return module


def _package(artifact: Path, out: Path, *options: str) -> dict[str, model_config_pb2.ModelConfig]:
    """Run the command; every config.pbtxt of the repository parsed by Triton's schema, by model name."""
    assert main(["package", "triton", str(artifact), "-o", str(out), *options]) == EXIT_OK
    configs = {}
    for path in sorted(out.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        assert config.name == path.parent.name and (path.parent / "1").is_dir()
        configs[config.name] = config
    assert sorted(configs) == ["maskrcnn", "maskrcnn_model", "maskrcnn_postprocess", "maskrcnn_preprocess"]
    return configs


# ---------------------------------------------------------------------------------- walking the ensemble
def _python_model(repo: Path, config: model_config_pb2.ModelConfig):
    """The step's model.py loaded as Triton's Python backend loads it, initialized with Triton's arguments."""
    spec = importlib.util.spec_from_file_location(f"{config.name}_model", repo / config.name / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                      "model_repository": str(repo / config.name), "model_version": "1", "model_name": config.name})
    return model


def _check_declared(config: model_config_pb2.ModelConfig, arrays: dict[str, np.ndarray]) -> None:
    """Each output has the type and rank its config declares (the batch dim included when it batches), and the
    declared sizes where they are not -1."""
    assert sorted(arrays) == sorted(o.name for o in config.output), config.name
    for output in config.output:
        array, dims = arrays[output.name], list(output.dims)
        dtype = model_config_pb2.DataType.Name(output.data_type)
        assert array.dtype == NUMPY_TYPES[dtype], (config.name, output.name, array.dtype)
        shape = array.shape[1:] if config.max_batch_size else array.shape
        assert len(shape) == len(dims) and all(d in (-1, s) for d, s in zip(dims, shape)), (output.name, array.shape)


def _run_step(step, configs, repo, pool: dict[str, list], pb) -> None:
    """One ensemble step over every request: inputs from the pool by input_map, outputs to it by output_map."""
    config = configs[step.model_name]
    names, errors = dict(step.input_map), []
    live = [i for i in range(len(pool["IMAGE"])) if all(pool[v][i] is not None for v in names.values())]
    outputs: list[dict | None] = [None] * len(pool["IMAGE"])  # a failed request stops there, as in Triton
    if config.backend == "python":
        requests = [pb.InferenceRequest([pb.Tensor(k, pool[v][i]) for k, v in names.items()]) for i in live]
        for i, response in zip(live, _python_model(repo, config).execute(requests)):
            outputs[i] = None if response.error else {t.name(): t.as_numpy() for t in response.output_tensors}
            errors += [response.error.message()] if response.error else []
    else:  # the graph, in the project's ONNX Runtime backend
        session = OnnxPredictor(repo / config.name / "1" / "model.onnx").session
        for i in live:
            arrays = session.run(None, {k: pool[v][i] for k, v in names.items()})
            outputs[i] = dict(zip([o.name for o in session.get_outputs()], arrays))
    for arrays in filter(None, outputs):
        if config.backend != "python":  # Triton shows the graph's outputs with the config's dims (num_detections [B,1])
            arrays.update({o.name: arrays[o.name].reshape(-1, *o.dims) for o in config.output if o.HasField("reshape")})
        _check_declared(config, arrays)
    for model_name, tensor in step.output_map.items():
        pool[tensor] = [None if arrays is None else arrays[model_name] for arrays in outputs]
    pool.setdefault("errors", []).extend(errors)


def _serve(repo: Path, configs, requests: list[list[bytes]], pb) -> tuple[dict[str, list], list[str]]:
    """The ensemble's outputs for each request (a list of encoded images), and the error messages."""
    ensemble = configs["maskrcnn"]
    pool: dict[str, list] = {"IMAGE": [np.array(blobs, dtype=object).reshape(-1, 1) for blobs in requests]}
    for step in ensemble.ensemble_scheduling.step:
        _run_step(step, configs, repo, pool, pb)
    return {o.name: pool[o.name] for o in ensemble.output}, pool.get("errors", [])


def _assert_same_detections(served: dict[str, np.ndarray], row: int, expected: dict) -> None:
    count = int(served["NUM_DETECTIONS"][row, 0])
    assert count == len(expected["scores"])
    np.testing.assert_array_equal(served["BOXES"][row, :count], expected["boxes"])
    np.testing.assert_array_equal(served["SCORES"][row, :count], expected["scores"])
    np.testing.assert_array_equal(served["LABELS"][row, :count], expected["labels"])
    assert decode_rles(served["MASKS"][row], count) == [dict(rle) for rle in expected["rles"]]


# ------------------------------------------------------------------------------------------------- tests
def test_dynamic_batch_graph_serves_predicts_detections(graphs, pb_utils, tmp_path):
    """Both images in one request (a batch of 2) give `predict(batch_size=2)`'s detections; an undecodable image
    is answered with an error for its request alone."""
    configs = _package(graphs["dynamic"], tmp_path / "repo", "--instances", "2", "--max-batch", "4")
    model = configs["maskrcnn_model"]
    assert (model.platform, model.max_batch_size, model.dynamic_batching.max_queue_delay_microseconds) == (
        "onnxruntime_onnx", 4, 2000)
    assert all(c.max_batch_size == 4 and c.instance_group[0].count == 2 for n, c in configs.items() if n != "maskrcnn")
    assert [s.model_name for s in configs["maskrcnn"].ensemble_scheduling.step] == [
        "maskrcnn_preprocess", "maskrcnn_model", "maskrcnn_postprocess"]
    assert file_digest(tmp_path / "repo" / "maskrcnn_model" / "1" / "model.onnx") == file_digest(graphs["dynamic"])

    served, errors = _serve(tmp_path / "repo", configs, [[p.read_bytes() for p in IMAGES], [b"not an image"]], pb_utils)
    expected = OnnxPredictor(graphs["dynamic"]).predict(IMAGES, batch_size=2)
    assert sum(len(d["scores"]) for d in expected) > 0
    for row, det in enumerate(expected):
        _assert_same_detections({k: v[0] for k, v in served.items()}, row, det)
    assert served["BOXES"][1] is None and errors == [
        "cannot read image 0 of the request: not an image PIL can decode (corrupt, or not PNG/JPG/JPEG/BMP data)"]


def test_fixed_batch_graph_serves_predicts_detections(graphs, pb_utils, tmp_path):
    """A graph whose batch is fixed cannot batch in Triton: max_batch_size 0 everywhere, the dims carry the batch,
    no dynamic batching; one image per request gives `predict`'s detections."""
    configs = _package(graphs["static"], tmp_path / "repo")
    model = configs["maskrcnn_model"]
    assert all(c.max_batch_size == 0 for c in configs.values()) and not model.HasField("dynamic_batching")
    assert list(model.input[0].dims) == [1, 3, 128, 160] and list(configs["maskrcnn"].input[0].dims) == [-1, 1]
    served, errors = _serve(tmp_path / "repo", configs, [[p.read_bytes()] for p in IMAGES], pb_utils)
    assert errors == []
    for request, det in enumerate(OnnxPredictor(graphs["static"]).predict(IMAGES)):
        _assert_same_detections({k: v[request] for k, v in served.items()}, 0, det)
    assert main(["package", "triton", str(graphs["static"]), "-o", str(tmp_path / "r2"), "--max-batch", "2"]) == \
        EXIT_BAD_INPUT


def test_custom_op_graph_is_refused(graphs, tmp_path, capsys):
    """The custom-node flavour runs as a Python callback in ONNX Runtime: one line, exit 2, naming the fix."""
    node = onnx.helper.make_node(OP_TYPE, ["x"], ["y"], domain=DOMAIN)
    graph = onnx.helper.make_graph([node], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = onnx.helper.make_model(graph)
    onnx.helper.set_model_props(model, metadata_of(onnx.load(str(graphs["static"]))))
    onnx.save(model, str(tmp_path / "custom.onnx"))
    assert main(["package", "triton", str(tmp_path / "custom.onnx"), "-o", str(tmp_path / "repo")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot run in Triton's ONNX Runtime backend" in err
    assert "Python callback" in err and "--roi-align standard" in err
    assert not (tmp_path / "repo").exists()


def _stand_in_engine(root: Path, graph: Path, profile: dict) -> Path:
    """An engine file and the metadata `maskrcnn-deploy build` writes beside it (the bytes are not an engine: only
    the packager reads them, and it copies them)."""
    from maskrcnn_deploy.runtime.backend.tensorrt.environment import EngineMetadata, write_metadata

    engine = root / "model.engine"
    engine.write_bytes(b"stand-in serialized engine")
    meta = EngineMetadata(
        tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", precision="fp16",
        precision_source="graph", strongly_typed=True, input_profile=profile,
        plugin_library="/opt/maskrcnn/libmaskrcnn_deploy_trt_plugin.so", plugin_sha256="0" * 64, onnx_path=str(graph),
        onnx_sha256=file_digest(graph), engine_sha256=file_digest(engine), engine_bytes=engine.stat().st_size,
        package_version="0.1.0", build_time_utc="2026-11-30T00:00:00Z", build_seconds=40.0,
        onnx_metadata=metadata_of(onnx.load(str(graph), load_external_data=False)))
    write_metadata(engine, meta)
    return engine


def test_engine_batching_comes_from_its_profile(graphs, pb_utils, tmp_path, capsys):
    profile = {"images": {"min": [1, 3, 160, 160], "opt": [2, 3, 160, 160], "max": [4, 3, 192, 192]},
               "image_sizes": {"min": [1, 2], "opt": [2, 2], "max": [4, 2]}}
    engine = _stand_in_engine(tmp_path, graphs["dynamic"], profile)
    configs = _package(engine, tmp_path / "repo", "--instances", "3")
    model = configs["maskrcnn_model"]
    assert (model.platform, model.max_batch_size, list(model.dynamic_batching.preferred_batch_size)) == (
        "tensorrt_plan", 4, [2])
    assert list(model.input[0].dims) == [3, -1, -1] and list(model.output[0].dims) == [20, 4]
    assert (model.instance_group[0].count, model_config_pb2.ModelInstanceGroup.Kind.Name(
        model.instance_group[0].kind)) == (3, "KIND_GPU")
    text = (tmp_path / "repo" / "maskrcnn_model" / "config.pbtxt").read_text()
    assert '--backend-config=tensorrt,plugins="/opt/maskrcnn/libmaskrcnn_deploy_trt_plugin.so"' in text
    assert (tmp_path / "repo" / "maskrcnn_model" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    # the preprocess step pads a batch below the profile's minimum 160x160 with the image mean, as TensorRTPredictor
    pre = _python_model(tmp_path / "repo", configs["maskrcnn_preprocess"])
    request = pb_utils.InferenceRequest([pb_utils.Tensor("IMAGE", np.array([[IMAGES[0].read_bytes()]], dtype=object))])
    [response] = pre.execute([request])
    images = {t.name(): t.as_numpy() for t in response.output_tensors}["images"]  # 640x480 -> 120x160 -> 128x160
    mean = np.array(MaskRCNNConfig.from_dict(json.loads((tmp_path / "repo" / "maskrcnn_preprocess" / "1" /
                                                          "graph.json").read_text())["config"]).image_mean, np.float32)
    assert images.shape == (1, 3, 160, 160) and np.array_equal(images[0, :, 128:], np.broadcast_to(
        mean.reshape(3, 1, 1), (3, 32, 160)))

    assert main(["package", "triton", str(engine), "-o", str(tmp_path / "r2"), "--max-batch", "8"]) == EXIT_BAD_INPUT
    assert "above" in capsys.readouterr().err
    engine.write_bytes(b"another engine")  # not the one the metadata describes: refused as the predictor refuses it
    assert main(["package", "triton", str(engine), "-o", str(tmp_path / "r3")]) == EXIT_BAD_INPUT


def test_engine_with_a_fixed_batch_does_not_batch(graphs, tmp_path):
    profile = {"images": {k: [2, 3, 128, 160] for k in ("min", "opt", "max")},
               "image_sizes": {k: [2, 2] for k in ("min", "opt", "max")}}
    configs = _package(_stand_in_engine(tmp_path, graphs["dynamic"], profile), tmp_path / "repo")
    model = configs["maskrcnn_model"]
    assert model.max_batch_size == 0 and not model.HasField("dynamic_batching")
    assert list(model.input[0].dims) == [2, 3, 128, 160] and list(model.output[0].dims) == [2, 20, 4]
    assert json.loads((tmp_path / "repo" / "maskrcnn_preprocess" / "1" / "graph.json").read_text())["batch_size"] == 2

