"""Compile the native RoIAlign libraries with the system compilers (no torch headers needed).

Used by `setup.py` at install time (so `pip install` builds them, with no torch inside build
isolation and no compiler at import time), and runnable by hand:

    python plugins/build_native.py            # build both next to this file, for a source checkout

Two shared libraries with a plain C interface (roi_align/roi_align_api.h):
  * the CPU library, always (g++ or $CXX);
  * the CUDA library, when nvcc is found (or $CUDA_HOME/bin/nvcc); skipped with a message otherwise.
    MASKRCNN_DEPLOY_CUDA=0 skips it, =1 makes a missing nvcc an error.
    MASKRCNN_DEPLOY_CUDA_ARCHS="80;90" picks the GPU architectures (default 80;86;89;90 + PTX of the last).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE / "roi_align"
CPU_SOURCES = [SOURCE_DIR / "roi_align_cpu.cpp"]
CUDA_SOURCES = [SOURCE_DIR / "roi_align_cuda.cu"]
HEADERS = sorted(SOURCE_DIR.glob("*.h"))
DEFAULT_CUDA_ARCHS = "80;86;89;90"


def library_filename(stem: str) -> str:
    """`_roi_align_cpu` -> `_roi_align_cpu.cpython-312-x86_64-linux-gnu.so` (the platform's extension suffix)."""
    return stem + sysconfig.get_config_var("EXT_SUFFIX")


def find_nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def cuda_wanted() -> bool | None:
    """True: required; False: skipped; None: build when nvcc is found."""
    flag = os.environ.get("MASKRCNN_DEPLOY_CUDA", "").strip()
    return {"": None, "0": False, "1": True}.get(flag)


def _run(cmd: list[str]) -> None:
    print("[maskrcnn-deploy native] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def build_cpu(output: Path) -> Path:
    cxx = os.environ.get("CXX", "g++")
    output.parent.mkdir(parents=True, exist_ok=True)
    _run([cxx, "-O3", "-std=c++17", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden", "-Wall",
          f"-I{SOURCE_DIR}", *map(str, CPU_SOURCES), "-o", str(output)])
    return output


def build_cuda(output: Path, nvcc: str) -> Path:
    archs = [a.strip() for a in os.environ.get("MASKRCNN_DEPLOY_CUDA_ARCHS", DEFAULT_CUDA_ARCHS).split(";") if a.strip()]
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")  # PTX for newer GPUs
    output.parent.mkdir(parents=True, exist_ok=True)
    # cudart is linked statically (nvcc's default), so the library needs no CUDA runtime at load time.
    _run([nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-cudart=static",
          *gencode, f"-I{SOURCE_DIR}", *map(str, CUDA_SOURCES), "-o", str(output)])
    return output


def build_all(out_dir: Path) -> list[Path]:
    """Build the CPU library and, where possible, the CUDA one into out_dir. Returns the files written."""
    built = [build_cpu(out_dir / library_filename("_roi_align_cpu"))]
    want = cuda_wanted()
    nvcc = find_nvcc()
    if want is False:
        print("[maskrcnn-deploy native] CUDA library skipped (MASKRCNN_DEPLOY_CUDA=0)", flush=True)
    elif nvcc is None:
        if want:
            raise RuntimeError("MASKRCNN_DEPLOY_CUDA=1 but nvcc was not found; install the CUDA toolkit or set CUDA_HOME")
        print("[maskrcnn-deploy native] nvcc not found: CUDA library skipped (CPU library only)", flush=True)
    else:
        built.append(build_cuda(out_dir / library_filename("_roi_align_cuda"), nvcc))
    return built


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    for path in build_all(target):
        print(path)
