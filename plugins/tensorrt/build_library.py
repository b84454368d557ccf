"""Build the TensorRT plugin library for `maskrcnn_deploy::MultiLevelRoIAlign` (plugins/tensorrt/) with CMake.

    from maskrcnn_deploy.plugins.tensorrt.build_library import build_plugin_library, default_plugin_library
    library = build_plugin_library(Path("build/tensorrt_plugin"))   # libmaskrcnn_deploy_trt_plugin.so
    trt.get_plugin_registry().load_library(str(library))           # or: trtexec --dynamicPlugins=<library>

or from a shell: `python -m maskrcnn_deploy.plugins.tensorrt.build_library [BUILD_DIR] [--cuda-archs "80;90"]`.

Needs cmake (>= 3.18), nvcc and TensorRT 10.x or 11.x headers, taken from the first of: the `tensorrt_root`
argument (its include/), $TENSORRT_INCLUDE_DIR, $TENSORRT_ROOT (its include/), the copy of the 10.x headers
that kernel-lens ships (`pip install kernel-lens`, part of the test extra). libnvinfer is never linked: the
library references no TensorRT symbol and is loaded into a process that already runs TensorRT. The library
works only with the TensorRT major of its headers (plugins/tensorrt/plugin_library.cpp), so the build
refuses headers of another major than the installed `tensorrt` Python package's (pip's TensorRT wheels
ship no headers: take them from NVIDIA's TensorRT tar/deb packages of that major).
The GPU architectures default to 75;80;86;87;89;90 (Turing to Hopper, Jetson Orin = 87) with PTX of the
last; $MASKRCNN_DEPLOY_TRT_CUDA_ARCHS or `cuda_archs` overrides them. $MASKRCNN_DEPLOY_BUILD_JOBS sets
the parallel compile jobs (default 2).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.plugins.build_native import find_nvcc

__all__ = ["PluginBuild", "PluginBuildError", "build_plugin", "build_plugin_library", "default_plugin_library",
           "harness_path", "header_tensorrt_major", "installed_tensorrt_version", "plugin_tensorrt_major",
           "tensorrt_include_dir", "DEFAULT_CUDA_ARCHS", "LIBRARY_NAME"]

SOURCE_DIR = Path(__file__).resolve().parent  # this folder: the plugin's C++ sources and CMakeLists.txt
REPO_ROOT = Path(__file__).resolve().parents[2]
LIBRARY_NAME = "libmaskrcnn_deploy_trt_plugin.so"
HARNESS_NAME = "mrd_trt_plugin_harness"
DEFAULT_CUDA_ARCHS = "75;80;86;87;89;90"
ENV_LIBRARY = "MASKRCNN_DEPLOY_TRT_PLUGIN"
MIN_CMAKE = (3, 18)
# written into the library by plugin_library.cpp (kBuiltForMarker)
_BUILT_FOR = re.compile(rb"maskrcnn_deploy TensorRT plugin built for TensorRT major (\d+);")


class PluginBuildError(BadInputError, RuntimeError):
    """The plugin library cannot be built here; the message names the problem and what to do."""


@dataclass(frozen=True)
class PluginBuild:
    library: Path         # libmaskrcnn_deploy_trt_plugin.so
    harness: Path | None  # mrd_trt_plugin_harness (run it: one PASS/FAIL line per check), None when not built


def default_plugin_library() -> Path:
    """Where the plugin library is looked for by default: $MASKRCNN_DEPLOY_TRT_PLUGIN, else
    build/tensorrt_plugin/libmaskrcnn_deploy_trt_plugin.so under the repository. It may not exist yet."""
    env = os.environ.get(ENV_LIBRARY, "").strip()
    return Path(env) if env else REPO_ROOT / "build" / "tensorrt_plugin" / LIBRARY_NAME


def harness_path(build_dir: Path) -> Path:
    """The test harness a build with `harness=True` leaves in build_dir."""
    return Path(build_dir) / HARNESS_NAME


def tensorrt_include_dir(tensorrt_root: str | None = None) -> Path:
    """The folder holding NvInferRuntime.h (see the module docstring for the search order)."""
    candidates: list[tuple[str, Path]] = []
    if tensorrt_root:
        candidates.append(("tensorrt_root", Path(tensorrt_root) / "include"))
    elif os.environ.get("TENSORRT_INCLUDE_DIR"):
        candidates.append(("TENSORRT_INCLUDE_DIR", Path(os.environ["TENSORRT_INCLUDE_DIR"])))
    elif os.environ.get("TENSORRT_ROOT"):
        candidates.append(("TENSORRT_ROOT", Path(os.environ["TENSORRT_ROOT"]) / "include"))
    else:
        spec = importlib.util.find_spec("kernel_lens")
        if spec is not None and spec.submodule_search_locations:
            candidates.append(("kernel-lens", Path(list(spec.submodule_search_locations)[0]) / "include" / "tensorrt"))
    for _, folder in candidates:
        if (folder / "NvInferRuntime.h").is_file():
            return folder
    if candidates:
        where, folder = candidates[0]
        raise PluginBuildError(f"TensorRT headers not found: no NvInferRuntime.h in {folder} ({where}); point "
                               "tensorrt_root / TENSORRT_ROOT at a TensorRT install, or TENSORRT_INCLUDE_DIR at its headers")
    raise PluginBuildError("TensorRT headers not found: pass tensorrt_root, set TENSORRT_ROOT or TENSORRT_INCLUDE_DIR, "
                           "or `pip install kernel-lens` (the test extra), which ships the TensorRT 10.x headers")


def header_tensorrt_major(include: Path) -> int:
    """The TensorRT major of the headers in `include` (NvInferVersion.h: TRT_MAJOR_ENTERPRISE in 10.x and 11.x)."""
    version_h = Path(include) / "NvInferVersion.h"
    text = version_h.read_text(errors="replace") if version_h.is_file() else ""
    found = re.search(r"#define\s+(?:TRT_MAJOR_ENTERPRISE|NV_TENSORRT_MAJOR)\s+(\d+)", text)
    if found is None:
        raise PluginBuildError(f"{version_h} does not define the TensorRT major version: point TENSORRT_ROOT or "
                               "TENSORRT_INCLUDE_DIR at a complete TensorRT 10 or 11 include folder")
    return int(found.group(1))


def installed_tensorrt_version() -> str | None:
    """The version of NVIDIA's `tensorrt` Python package from its metadata (not imported), None when absent.

    The distribution that provides the `tensorrt` module (tensorrt-cu12, ...; tensorrt-stubs does not
    count), else the `tensorrt` meta-package.
    """
    names = [n for n in importlib.metadata.packages_distributions().get("tensorrt", []) if "stubs" not in n.lower()]
    for name in names + ["tensorrt"]:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def plugin_tensorrt_major(library: Path) -> int | None:
    """The TensorRT major a built plugin library is for, read from its file without loading it (loading
    it into a process with TensorRT would register it); None when the file records none."""
    found = _BUILT_FOR.search(Path(library).read_bytes())
    return int(found.group(1)) if found else None


def _check_header_major(include: Path) -> None:
    """Refuse headers of another major than the installed TensorRT's (the library would not work with it)."""
    installed = installed_tensorrt_version()
    if installed is None:
        return  # no TensorRT here: the library is for the headers' major
    head = installed.split(".", 1)[0]
    headers, running = header_tensorrt_major(include), int(head) if head.isdigit() else None
    if running is not None and headers != running:
        raise PluginBuildError(f"the TensorRT headers in {include} are TensorRT {headers}, the installed tensorrt "
                               f"package is {installed}: point TENSORRT_ROOT (or TENSORRT_INCLUDE_DIR) at TensorRT "
                               f"{running} headers (NVIDIA's tar/deb packages; pip wheels ship none)")


def _cmake() -> str:
    cmake = shutil.which("cmake")
    if cmake is None:
        raise PluginBuildError("cmake not found: install CMake >= 3.18 (apt install cmake, or pip install cmake)")
    out = subprocess.run([cmake, "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"(\d+)\.(\d+)", out)
    if found is None or (int(found.group(1)), int(found.group(2))) < MIN_CMAKE:
        raise PluginBuildError(f"{cmake} is too old ({out.splitlines()[0] if out else 'no version'}); "
                               "CMake >= 3.18 is needed (pip install cmake)")
    return cmake


def _cuda_archs(cuda_archs: str | None) -> str:
    text = cuda_archs or os.environ.get("MASKRCNN_DEPLOY_TRT_CUDA_ARCHS") or DEFAULT_CUDA_ARCHS
    archs = [a for a in re.split(r"[;,\s]+", text.strip()) if a]
    if not archs or not all(re.fullmatch(r"\d{2,3}", a) for a in archs):
        raise PluginBuildError(f"CUDA architectures {text!r} are not a list of compute capabilities like '75;80;86'")
    return ";".join(archs)


def _run(cmd: list[str], step: str, build_dir: Path) -> None:
    print("[maskrcnn-deploy trt-plugin] " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise PluginBuildError(f"{step} failed (exit {result.returncode}) in {build_dir}; its output above says why")


def build_plugin(build_dir: Path, tensorrt_root: str | None = None, cuda_archs: str | None = None, *,
                 harness: bool = True, jobs: int | None = None) -> PluginBuild:
    """Configure and build plugins/tensorrt/ into build_dir (reused by later calls); returns the outputs."""
    build_dir = Path(build_dir).resolve()
    cmake = _cmake()
    nvcc = find_nvcc()
    if nvcc is None:
        raise PluginBuildError("nvcc not found: install the CUDA toolkit (12.x or 13.x) and put nvcc on PATH or set CUDA_HOME")
    include = tensorrt_include_dir(tensorrt_root)
    _check_header_major(include)
    archs = _cuda_archs(cuda_archs)
    jobs = jobs or int(os.environ.get("MASKRCNN_DEPLOY_BUILD_JOBS", "2"))
    build_dir.mkdir(parents=True, exist_ok=True)
    configure = [cmake, "-S", str(SOURCE_DIR), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DTENSORRT_INCLUDE_DIR={include}", f"-DMRD_CUDA_ARCHS={archs}",
                 f"-DMRD_BUILD_HARNESS={'ON' if harness else 'OFF'}"]
    _run(configure, "cmake configure", build_dir)
    _run([cmake, "--build", str(build_dir), "-j", str(jobs)], "cmake build", build_dir)
    library = build_dir / LIBRARY_NAME
    if not library.is_file():
        raise PluginBuildError(f"the build finished but {library} is missing; remove {build_dir} and build again")
    return PluginBuild(library=library, harness=harness_path(build_dir) if harness else None)


def build_plugin_library(build_dir: Path, tensorrt_root: str | None = None, cuda_archs: str | None = None) -> Path:
    """Build the plugin library (and its harness) into build_dir; returns the path of the .so."""
    return build_plugin(build_dir, tensorrt_root, cuda_archs).library


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the MultiLevelRoIAlign TensorRT plugin library.")
    parser.add_argument("build_dir", nargs="?", type=Path, default=default_plugin_library().parent)
    parser.add_argument("--tensorrt-root", help="TensorRT install (its include/ holds the headers)")
    parser.add_argument("--cuda-archs", help=f"e.g. '80;90' (default {DEFAULT_CUDA_ARCHS})")
    parser.add_argument("--no-harness", action="store_true", help="build only the library")
    args = parser.parse_args(argv)
    try:
        built = build_plugin(args.build_dir, args.tensorrt_root, args.cuda_archs, harness=not args.no_harness)
    except PluginBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(built.library)
    return 0


if __name__ == "__main__":
    sys.exit(main())
