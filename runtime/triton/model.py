"""The Python-backend model of the repository's preprocess and postprocess steps (Triton's `TritonPythonModel`).

Each step's folder holds a model.py that imports this class, and graph.json (stages.py's settings); its
config.pbtxt names the role (`parameters { key: "role" ... }`). Triton's Python backend calls:

    initialize(args)   args["model_config"] (the config as JSON), args["model_repository"] (the model's folder),
                       args["model_version"]
    execute(requests)  one response per request, in order: the stage's outputs, or an error response naming the
                       problem (an undecodable image, too many images for a fixed batch) for that request alone
    finalize()

`triton_python_backend_utils` exists only inside Triton's Python backend (tests/test_triton_package.py stands it
in), so it is imported here and nowhere else. The server's Python needs `pip install maskrcnn-deploy` (the base
install: numpy, Pillow, pycocotools; no torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from maskrcnn_deploy.common.errors import BadInputError
from maskrcnn_deploy.runtime.triton.stages import SETTINGS_FILE, load_stages, postprocess, preprocess

__all__ = ["TritonPythonModel"]

ROLES = {"preprocess": lambda stages, arrays: preprocess(stages, arrays["IMAGE"]), "postprocess": postprocess}


class TritonPythonModel:
    """The preprocess or postprocess step of the ensemble (config parameter "role")."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        self.role = config["parameters"]["role"]["string_value"]
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} in {config['name']}'s config.pbtxt: use one of {sorted(ROLES)}")
        self.stages = load_stages(Path(args["model_repository"]) / str(args["model_version"]) / SETTINGS_FILE)
        self.input_names = [tensor["name"] for tensor in config["input"]]

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            try:
                arrays = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
                outputs = ROLES[self.role](self.stages, arrays)
            except BadInputError as err:  # this request's input: answer it with the one-line message
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err))))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, array) for name, array in outputs.items()]))
        return responses

    def finalize(self) -> None:
        self.stages = None
