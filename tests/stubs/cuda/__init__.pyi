# cuda-python's `cuda` namespace (see bindings/runtime.pyi for why these stubs exist).
