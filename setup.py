"""Builds the native RoIAlign libraries during `pip install` (metadata lives in pyproject.toml).

The libraries have a plain C interface and are loaded with ctypes, so they compile with the system
compilers alone: no torch in the build environment, no compiler at import time. The compile
commands are in plugins/build_native.py.
"""

import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_spec = importlib.util.spec_from_file_location("build_native", Path(__file__).parent / "plugins" / "build_native.py")
native = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(native)


class BuildNative(build_ext):
    """Compiles each library with build_native instead of the Python-extension toolchain."""

    def build_extension(self, ext: Extension) -> None:
        output = Path(self.get_ext_fullpath(ext.name))
        if ext.name.endswith("_roi_align_cuda"):
            native.build_cuda(output, native.find_nvcc())
        else:
            native.build_cpu(output)


def _extensions() -> list[Extension]:
    rel = lambda paths: [str(p.relative_to(Path(__file__).parent.resolve())) for p in paths]  # noqa: E731
    exts = [Extension("maskrcnn_deploy.plugins._roi_align_cpu", rel(native.CPU_SOURCES), depends=rel(native.HEADERS))]
    want, nvcc = native.cuda_wanted(), native.find_nvcc()
    if want and nvcc is None:
        raise RuntimeError("MASKRCNN_DEPLOY_CUDA=1 but nvcc was not found; install the CUDA toolkit or set CUDA_HOME")
    if want is not False and nvcc is not None:
        exts.append(Extension("maskrcnn_deploy.plugins._roi_align_cuda", rel(native.CUDA_SOURCES),
                              depends=rel(native.HEADERS)))
    else:
        print("[maskrcnn-deploy native] CUDA library not built (nvcc not found or MASKRCNN_DEPLOY_CUDA=0)")
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildNative})
