"""The RoIAlign op in every runtime: one C++/CUDA core (roi_align/), its PyTorch op (torch_ops), its ONNX
Runtime op (onnxruntime_op), its TensorRT plugin (tensorrt/), and the op's identity (op_spec).

Import from the submodules; this file imports nothing (the PyTorch op loads torch, the others need not).
"""
