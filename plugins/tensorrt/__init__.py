"""The TensorRT plugin library: its C++ sources, CMake project, and build_library.py, which compiles it."""
