"""A Triton Inference Server model repository for an artifact: `maskrcnn-deploy package triton` (docs/serving.md).

    artifact.py    what the repository needs to know of a .onnx graph or a TensorRT engine (ServedModel)
    configs.py     the config.pbtxt texts (main model, Python-backend steps, ensemble)
    stages.py      preprocessing and postprocessing on numpy, with the predictors' own code (no torch)
    model.py       the Python-backend model (`TritonPythonModel`) running one of those stages in Triton
    repository.py  writes the tree

model.py imports `triton_python_backend_utils`, which only exists inside Triton's Python backend, so nothing
here imports it; the repository's model.py files do.
"""
