"""TensorRT: engine building (build_plan -> engine_builder), the engine's environment record, the predictor."""
