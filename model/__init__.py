"""Mask R-CNN as the paper describes it: network, training, data, evaluation, checkpoints from other frameworks.

Import from the submodules (e.g. `maskrcnn_deploy.model.checkpoint.load_checkpoint`); this file imports
nothing, so that torch-free code can use `model.data` and `model.evaluation` without loading torch.
"""
