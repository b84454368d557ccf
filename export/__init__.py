"""The fixed-shape deploy graph, its ONNX export (custom op or standard ops) and the graph's metadata I/O.

Import from the submodules; this file imports nothing, so `export.graph_io` stays free of torch.
"""
