"""TensorRT plugin (plugins/tensorrt/): the CMake build of the plugin library for every default GPU
architecture, its C++ harness (creator fields and their validation, clone, serialization, output types and
shapes, format combinations, shape checks, enqueue against the CPU kernel where a GPU exists), the library's
exports and dependencies, the build helper's errors, and loading into TensorRT where a real one is installed.
The op's optional last input, extents [B,2] float32, is checked next to the 5-input form; what enqueue hands
the kernel (the extents pointer, or NULL) through the probe build of the library (harness/core_probe.cpp).

The library is compiled and linked on every run (about 30 s on 2 cores for all six architectures);
MASKRCNN_DEPLOY_TEST_TRT_ARCHS="75" narrows the architectures for a quicker local loop."""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from maskrcnn_deploy.plugins.build_native import find_nvcc
from maskrcnn_deploy.plugins.tensorrt import build_library
from maskrcnn_deploy.plugins.tensorrt.build_library import PluginBuildError

TEST_ARCHS = os.environ.get("MASKRCNN_DEPLOY_TEST_TRT_ARCHS") or build_library.DEFAULT_CUDA_ARCHS


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> build_library.PluginBuild:
    missing = [tool for tool, found in (("cmake", shutil.which("cmake")), ("nvcc", find_nvcc())) if not found]
    if missing:
        if os.environ.get("MASKRCNN_DEPLOY_CUDA") == "1":
            pytest.fail(f"MASKRCNN_DEPLOY_CUDA=1 but {' and '.join(missing)} not found")
        pytest.skip(f"{' and '.join(missing)} not found: the TensorRT plugin cannot be compiled here")
    return build_library.build_plugin(tmp_path_factory.mktemp("trt_plugin"), cuda_archs=TEST_ARCHS)


@pytest.fixture(scope="session")
def harness_run(built) -> subprocess.CompletedProcess:
    assert built.harness is not None and built.harness.is_file()
    return subprocess.run([str(built.harness), str(built.library)], capture_output=True, text=True, timeout=300)


def lines(run: subprocess.CompletedProcess, status: str) -> list[str]:
    return [line[len(status) + 1:] for line in run.stdout.splitlines() if line.startswith(status + " ")]


def cuda_device_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# ----------------------------------------------------------------------------- the harness
def test_harness_passes_every_check(harness_run):
    assert harness_run.returncode == 0, harness_run.stdout + harness_run.stderr
    assert lines(harness_run, "FAIL") == []
    summary = re.search(r"SUMMARY: (\d+) passed, (\d+) failed, (\d+) skipped", harness_run.stdout)
    assert summary is not None, harness_run.stdout
    passed, failed, skipped = map(int, summary.groups())
    assert failed == 0 and passed == len(lines(harness_run, "PASS")) and skipped == len(lines(harness_run, "SKIP"))
    assert passed >= 90


@pytest.mark.parametrize("case, message", [
    ('mode "sum"', 'mode must be "avg" or "max", got "sum"'),
    ("mode as an int", "field 'mode' must be kCHAR, got kINT32"),
    ("output_height 0", "output_height must be at least 1, got 0"),
    ("output_width -3", "output_width must be at least 1, got -3"),
    ("sampling_ratio -1", "sampling_ratio must be 0 (adaptive) or positive, got -1"),
    ("aligned 2", "aligned must be 0 or 1, got 2"),
    ("spatial_scales not a power of two", "spatial_scales[1] = 0.1 is not a positive power of two"),
    ("spatial_scales skip a level", "levels must be consecutive"),
    ("spatial_scales with 9 levels", "must hold 1 to 8 values (one per level), got 9"),
    ("canonical_scale 0", "canonical_scale must be positive and finite, got 0"),
    ("level_eps infinite", "level_eps must be finite, got inf"),
    ("unknown field", "unknown field 'pooled_size'"),
    ("missing field", "missing field(s): level_eps, mode"),
    ("field given twice", "field 'output_width' is given twice"),
])
def test_harness_rejects_bad_attributes_with_a_precise_error(harness_run, case, message):
    # the harness checks that no plugin is made and prints what the plugin logged through TensorRT's logger
    row = [line for line in lines(harness_run, "PASS") if line.startswith(f"rejects {case}:")]
    assert len(row) == 1, harness_run.stdout
    assert "logged \"MultiLevelRoIAlign: cannot create layer 'roi_pool': " in row[0] and message in row[0]


@pytest.mark.parametrize("check", [
    "serialization round trip (kRUNTIME) gives an equal plugin",
    "getOutputShapes: rois [R,5], p* [B,256,H,W] -> [R,256,14,7]",
    "supportsFormatCombination accepts exactly float32 rois with all-float32 or all-float16 maps and output, "
    "linear (of 10^6)",
    "getOutputDataTypes float32 rois, float16 maps -> float16",
    "getOutputDataTypes rejects float16 rois",
    "getWorkspaceSize is 0",
    "configurePlugin rejects maps with different channel counts",
    "enqueue returns the core's error for an empty feature map",
])
def test_harness_ran_the_interface_checks(harness_run, check):
    assert check in lines(harness_run, "PASS"), harness_run.stdout


@pytest.mark.parametrize("check", [
    "extents: getOutputDataTypes float16 maps, float32 extents -> float16 (the maps' type)",
    "extents: getOutputShapes rois [R,5], p* [B,256,H,W], extents [B,2] -> [R,256,7,7]",
    "extents: supportsFormatCombination accepts exactly float32 rois and extents with all-float32 or all-float16 "
    "maps and output, linear",
    "extents: float16 maps: extents (position 5) float32 accepted, float16 refused; the output (position 6) float16 "
    "accepted, float32 refused",
    "extents: configurePlugin accepts dynamic extents [-1,2]",
    "extents: onShapeChange accepts Mask R-CNN shapes with extents [2,2]",
    # enqueue through the probe library: a plugin that dropped the extents pointer fails these
    "enqueue after a 6-input onShapeChange hands the kernel the extents pointer",
    "enqueue with extents (float32) equals the CPU kernel with the extents",
    "a clone made after a 6-input onShapeChange still hands the kernel the extents",
    "enqueue after a 5-input onShapeChange hands the kernel NULL extents",
    "enqueue without extents (float32) equals the CPU kernel without extents",
    "enqueue with float16 maps and float32 extents hands the kernel the extents pointer",
    "the probe problem's result depends on the extents (CPU kernel)",
])
def test_harness_checks_the_optional_extents_input(harness_run, check):
    assert check in lines(harness_run, "PASS"), harness_run.stdout


@pytest.mark.parametrize("case, message", [
    ("extents: getOutputDataTypes rejects float16 extents", "'extents' must be float32, got float16"),
    ("getOutputDataTypes rejects 7 inputs for 4 levels with the two accepted counts",
     "expects 5 inputs (rois and 4 feature maps) or 6 (then extents) and 1 output, got 7 and 1"),
    ("extents: getOutputShapes rejects extents [B,3]", "'extents' must be [B, 2], got [B, 3]"),
    ("extents: getOutputShapes rejects extents [3,2] with maps of batch 2",
     "'extents' has batch 3, the feature maps have 2"),
    ("extents: configurePlugin rejects extents [2,3]", "'extents' must be [B, 2], got [B, 3]"),
    ("extents: configurePlugin rejects rank-3 extents", "'extents' must be [B, 2], got rank 3"),
    ("extents: onShapeChange rejects extents [1,2] with maps of batch 2",
     "'extents' has batch 1, the feature maps have 2"),
])
def test_harness_rejects_bad_extents_with_a_precise_error(harness_run, case, message):
    # these checks print what the plugin logged, on success too
    row = [line for line in lines(harness_run, "PASS") if line.startswith(f"{case}:")]
    assert len(row) == 1, harness_run.stdout
    assert f"layer 'roi_pool': {message}" in row[0], row[0]


def test_harness_enqueue_runs_on_a_gpu_and_is_skipped_without_one(harness_run):
    enqueue = [line for line in lines(harness_run, "PASS") if line.startswith("enqueue float")]
    if cuda_device_present():
        assert len(enqueue) == 6 and {"float32", "float16"} <= {line.split()[1] for line in enqueue}, harness_run.stdout
        assert len([line for line in enqueue if "with extents" in line]) == 2, harness_run.stdout
    else:
        assert enqueue == []
        assert any(line.startswith("enqueue on the GPU against the CPU kernel") and "no CUDA device" in line
                   for line in lines(harness_run, "SKIP")), harness_run.stdout


# ----------------------------------------------------------------------------- registration when loaded
def registration_check(built, scenario: str, fake_version: str | None = None) -> subprocess.CompletedProcess:
    """Run one scenario of harness/registration_check.cpp against the stand-in libnvinfer (fake_nvinfer.cpp),
    which refuses a second registration and fails loadLibrary when a creator is already registered, as
    TensorRT does; `fake_version` is what its getInferLibVersion() reports (default: the headers')."""
    env = dict(os.environ, MRD_FAKE_TENSORRT_VERSION=fake_version or "")
    major = build_library.plugin_tensorrt_major(built.library)
    fake = built.library.parent / "fake_tensorrt" / f"libnvinfer.so.{major}"
    return subprocess.run([str(built.library.parent / "mrd_trt_registration_check"), scenario, str(built.library),
                           str(fake)],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("scenario, checks", [
    ("no-tensorrt", 6),   # opened before any TensorRT: registers nothing, getCreators still works
    ("ctypes", 8),        # import tensorrt (RTLD_LOCAL), then ctypes.CDLL / polygraphy --plugins
    ("load-library", 5),  # trtexec --dynamicPlugins / IPluginRegistry::loadLibrary with libnvinfer linked
    ("load-library-only", 3),  # the same with MASKRCNN_DEPLOY_TRT_REGISTER_AT_LOAD=0 (load_plugin_library)
])
def test_library_registers_once_under_every_loader(built, scenario, checks):
    run = registration_check(built, scenario)
    assert run.returncode == 0 and lines(run, "FAIL") == [], run.stdout + run.stderr
    assert len(lines(run, "PASS")) == checks, run.stdout


def test_get_creators_calls_no_registry_method_inside_load_library(built):
    # issue 18 item 7: the load-time registration is not withdrawn from inside getCreators
    run = registration_check(built, "load-library")
    assert "load-library: getCreators withdrew nothing (no registry call inside loadLibrary)" in lines(run, "PASS"), \
        run.stdout
    assert "load-library: ... and registerCreator was called once (at load)" in lines(run, "PASS"), run.stdout


@pytest.mark.parametrize("scenario", ["other-major-python", "other-major-trtexec"])
@pytest.mark.parametrize("fake_version, shown", [("110100", "11.1.0"), ("90000", "9.0.0")])
def test_library_makes_no_registry_call_into_another_major(built, scenario, fake_version, shown):
    # a 10.x build in a process whose libnvinfer reports 11.1.0 (and, the other way round, an older major):
    # vtable slots differ between majors, so the library must not call into that registry or logger
    run = registration_check(built, scenario, fake_version)
    assert run.returncode == 0 and lines(run, "FAIL") == [], run.stdout + run.stderr
    assert len(lines(run, "PASS")) == 6, run.stdout
    message = [line for line in run.stderr.splitlines() if "MultiLevelRoIAlign plugin library" in line]
    assert message == [f"[E] MultiLevelRoIAlign plugin library: built for TensorRT 10 but this process runs "
                       f"TensorRT {shown}; nothing registered. Rebuild it against TensorRT {shown.split('.')[0]} "
                       f"headers (python -m maskrcnn_deploy.plugins.tensorrt.build_library --tensorrt-root <TensorRT "
                       f"{shown.split('.')[0]} install>)"], run.stderr


@pytest.mark.skipif(not os.environ.get("MASKRCNN_DEPLOY_TEST_TRT11_INCLUDE"),
                    reason="set MASKRCNN_DEPLOY_TEST_TRT11_INCLUDE to a TensorRT 11 include folder (e.g. from "
                           "github.com/NVIDIA/TensorRT include/) to build the library for TensorRT 11 too")
def test_tensorrt_11_build_makes_no_registry_call_into_tensorrt_10(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TENSORRT_INCLUDE_DIR", os.environ["MASKRCNN_DEPLOY_TEST_TRT11_INCLUDE"])
    monkeypatch.setattr(build_library, "installed_tensorrt_version", lambda: None)
    built11 = build_library.build_plugin(tmp_path_factory.mktemp("trt11_plugin"), cuda_archs="75")
    assert build_library.plugin_tensorrt_major(built11.library) == 11
    harness = subprocess.run([str(built11.harness), str(built11.library)], capture_output=True, text=True, timeout=300)
    assert harness.returncode == 0 and lines(harness, "FAIL") == [], harness.stdout
    for scenario in ("no-tensorrt", "ctypes", "load-library"):
        run = registration_check(built11, scenario)
        assert run.returncode == 0 and lines(run, "FAIL") == [], run.stdout + run.stderr
    run = registration_check(built11, "other-major-python", "101400")  # TensorRT 10.14.0 in the process
    assert run.returncode == 0 and lines(run, "FAIL") == [] and "built for TensorRT 11 but this process runs " \
        "TensorRT 10.14.0; nothing registered" in run.stderr, run.stdout + run.stderr


def test_library_records_the_tensorrt_major_of_its_headers(built):
    include = build_library.tensorrt_include_dir()
    assert build_library.header_tensorrt_major(include) == 10  # kernel-lens ships the 10.x headers
    assert build_library.plugin_tensorrt_major(built.library) == 10
    library = ctypes.CDLL(str(built.library), mode=os.RTLD_NOW | os.RTLD_LOCAL)
    assert library.mrdTensorRTMajor() == 10


# ----------------------------------------------------------------------------- the library file
def fatbin_entries(library: Path) -> set[tuple[str, int]]:
    """(kind, sm) of every entry in the library's CUDA fat binaries: ('sass', 86), ('ptx', 90), ..."""
    data = library.read_bytes()
    entries, start = set(), 0
    while (at := data.find(struct.pack("<I", 0xBA55ED50), start)) >= 0:  # fatbin header magic
        header_size, size = struct.unpack_from("<HQ", data, at + 6)
        entry, end = at + header_size, at + header_size + size
        while entry < end:
            kind, entry_header, payload = struct.unpack_from("<HxxIQ", data, entry)
            entries.add(({1: "ptx", 2: "sass"}.get(kind, str(kind)), struct.unpack_from("<I", data, entry + 28)[0]))
            entry += entry_header + payload
        start = at + 4
    return entries


def test_library_holds_sass_for_each_architecture_and_ptx_of_the_last(built):
    archs = [int(a) for a in TEST_ARCHS.split(";")]
    assert fatbin_entries(built.library) == {("sass", a) for a in archs} | {("ptx", archs[-1])}


@pytest.mark.skipif(shutil.which("nm") is None or shutil.which("readelf") is None, reason="binutils (nm, readelf) not found")
def test_library_exports_only_the_entry_points_and_needs_no_tensorrt(built):
    defined = subprocess.run(["nm", "-D", "--defined-only", str(built.library)], capture_output=True, text=True, check=True)
    assert sorted(line.split()[-1] for line in defined.stdout.splitlines() if line.strip()) == [
        "getCreators", "mrdTensorRTMajor", "setLoggerFinder"]
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(built.library)], capture_output=True, text=True,
                               check=True).stdout
    assert "getPluginRegistry" not in undefined and "nvinfer" not in undefined.lower()
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                        subprocess.run(["readelf", "-d", str(built.library)], capture_output=True, text=True).stdout)
    assert needed and not any("nvinfer" in lib or "cudart" in lib for lib in needed), needed  # cudart is static


def test_library_loads_with_ctypes_and_returns_one_creator(built):
    library = ctypes.CDLL(str(built.library), mode=os.RTLD_NOW | os.RTLD_LOCAL)
    get_creators = library.getCreators
    get_creators.restype = ctypes.POINTER(ctypes.c_void_p)
    get_creators.argtypes = [ctypes.POINTER(ctypes.c_int32)]  # int32_t& is passed as a pointer
    count = ctypes.c_int32(-1)
    creators = get_creators(ctypes.byref(count))
    assert count.value == 1 and creators and creators[0]
    assert library.setLoggerFinder is not None
    with pytest.raises(AttributeError):
        library.mrd_roi_align_forward_cuda  # the core's C functions stay internal


# ----------------------------------------------------------------------------- the build helper
def test_default_library_location(monkeypatch, tmp_path):
    monkeypatch.delenv(build_library.ENV_LIBRARY, raising=False)
    default = build_library.default_plugin_library()
    assert default == Path(build_library.__file__).resolve().parents[2] / "build" / "tensorrt_plugin" / \
        "libmaskrcnn_deploy_trt_plugin.so"
    monkeypatch.setenv(build_library.ENV_LIBRARY, str(tmp_path / "mine.so"))
    assert build_library.default_plugin_library() == tmp_path / "mine.so"


def test_build_errors_name_the_problem_and_the_fix(monkeypatch, tmp_path):
    def error(**kwargs) -> str:
        with pytest.raises(PluginBuildError) as caught:
            build_library.build_plugin_library(tmp_path / "build", **kwargs)
        message = str(caught.value)
        assert "\n" not in message
        return message

    assert "no NvInferRuntime.h in " + str(tmp_path / "include") in error(tensorrt_root=str(tmp_path))
    assert "not a list of compute capabilities" in error(cuda_archs="sm_80")
    monkeypatch.setattr(build_library, "find_nvcc", lambda: None)
    assert "nvcc not found: install the CUDA toolkit" in error()
    monkeypatch.setattr(build_library.shutil, "which", lambda name: None)
    assert "cmake not found: install CMake >= 3.18" in error()
    assert not (tmp_path / "build").exists()  # nothing is configured before the checks pass


def test_build_refuses_headers_of_another_major_than_the_installed_tensorrt(monkeypatch, tmp_path):
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "NvInferRuntime.h").write_text("")
    (tmp_path / "include" / "NvInferVersion.h").write_text("#define TRT_MAJOR_ENTERPRISE 10\n"
                                                           "#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n")
    monkeypatch.setattr(build_library, "installed_tensorrt_version", lambda: "11.1.0.106")
    with pytest.raises(PluginBuildError) as caught:
        build_library.build_plugin_library(tmp_path / "build", tensorrt_root=str(tmp_path))
    assert str(caught.value) == (f"the TensorRT headers in {tmp_path / 'include'} are TensorRT 10, the installed "
                                 "tensorrt package is 11.1.0.106: point TENSORRT_ROOT (or TENSORRT_INCLUDE_DIR) at "
                                 "TensorRT 11 headers (NVIDIA's tar/deb packages; pip wheels ship none)")
    assert not (tmp_path / "build").exists()
    (tmp_path / "include" / "NvInferVersion.h").write_text("#define TRT_MAJOR_ENTERPRISE 11\n")
    assert build_library.header_tensorrt_major(tmp_path / "include") == 11


def test_installed_tensorrt_version_ignores_the_stubs(monkeypatch):
    import importlib.metadata as metadata

    versions = {"tensorrt-stubs": "10.13.0.35.1", "tensorrt_cu12": "11.1.0.106"}

    def version(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"tensorrt": ["tensorrt-stubs", "tensorrt_cu12"]})
    assert build_library.installed_tensorrt_version() == "11.1.0.106"
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"tensorrt": ["tensorrt-stubs"]})
    assert build_library.installed_tensorrt_version() is None  # the stubs' tensorrt/ folder is not TensorRT


def test_header_search_order(monkeypatch, tmp_path):
    for folder in ("a/include", "b", "c/include"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "NvInferRuntime.h").write_text("")
    monkeypatch.setenv("TENSORRT_INCLUDE_DIR", str(tmp_path / "b"))
    monkeypatch.setenv("TENSORRT_ROOT", str(tmp_path / "c"))
    assert build_library.tensorrt_include_dir(str(tmp_path / "a")) == tmp_path / "a" / "include"
    assert build_library.tensorrt_include_dir() == tmp_path / "b"
    monkeypatch.delenv("TENSORRT_INCLUDE_DIR")
    assert build_library.tensorrt_include_dir() == tmp_path / "c" / "include"


# ----------------------------------------------------------------------------- inside TensorRT
def real_tensorrt():
    trt = pytest.importorskip("tensorrt")
    if not hasattr(trt, "Builder"):  # tensorrt-stubs installs a tensorrt/ folder of .pyi files only
        pytest.skip("TensorRT is not installed (only its type stubs, tensorrt-stubs, are importable)")
    return trt


def test_tensorrt_loads_the_library_and_finds_the_creator(built):
    trt = real_tensorrt()
    registry = trt.get_plugin_registry()
    handle = registry.load_library(str(built.library))
    try:
        creator = registry.get_creator("MultiLevelRoIAlign", "1", "")
        assert creator is not None and creator.name == "MultiLevelRoIAlign"
        names = creator.field_names
        assert [names[i].name for i in range(len(names))] == [
            "output_height", "output_width", "sampling_ratio", "aligned", "spatial_scales", "canonical_scale",
            "canonical_level", "level_eps", "mode"]

        def fields(mode: str):  # the attributes as TensorRT's Python API passes them
            i32, f32 = trt.PluginFieldType.INT32, trt.PluginFieldType.FLOAT32
            return trt.PluginFieldCollection([
                trt.PluginField("output_height", np.array([7], np.int32), i32),
                trt.PluginField("output_width", np.array([7], np.int32), i32),
                trt.PluginField("sampling_ratio", np.array([2], np.int32), i32),
                trt.PluginField("aligned", np.array([0], np.int32), i32),
                trt.PluginField("spatial_scales", np.array([1 / 4, 1 / 8, 1 / 16, 1 / 32], np.float32), f32),
                trt.PluginField("canonical_scale", np.array([224], np.float32), f32),
                trt.PluginField("canonical_level", np.array([4], np.int32), i32),
                trt.PluginField("level_eps", np.array([1e-6], np.float32), f32),
                trt.PluginField("mode", np.frombuffer(mode.encode(), np.int8), trt.PluginFieldType.CHAR),
            ])

        def create(mode: str):
            try:
                return creator.create_plugin("roi_pool", fields(mode), trt.TensorRTPhase.BUILD)
            except Exception:  # the bindings may raise where the C++ creator returned nullptr
                return None

        assert create("avg") is not None
        assert create("sum") is None
    finally:
        registry.deregister_library(handle)


def test_tensorrt_registers_the_creator_when_the_library_is_loaded_with_ctypes(built):
    real_tensorrt()  # in a fresh process: what polygraphy --plugins does after importing tensorrt
    script = ("import ctypes, sys, tensorrt as trt; ctypes.CDLL(sys.argv[1]); "
              "c = trt.get_plugin_registry().get_creator('MultiLevelRoIAlign', '1', ''); "
              "sys.exit(0 if c is not None and c.name == 'MultiLevelRoIAlign' else 1)")
    run = subprocess.run([sys.executable, "-c", script, str(built.library)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
