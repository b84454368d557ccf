# cuda.bindings (cuda-python 12.6.1 and later); only `runtime` is stubbed, see runtime.pyi.
