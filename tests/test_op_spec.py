"""The custom op's identity has one home (plugins/op_spec.py); the TensorRT plugin's C++ must agree with it,
and the exporter, ONNX Runtime and the engine builder read it from there."""

from __future__ import annotations

import re
from pathlib import Path

from maskrcnn_deploy.plugins import op_spec

TENSORRT = Path(op_spec.__file__).resolve().parent / "tensorrt"
CPP_TYPE = {"INT": ("kINT32", "kScalar"), "FLOAT": ("kFLOAT32", "kScalar"), "FLOATS": ("kFLOAT32", "kList"),
            "STRING": ("kCHAR", "kString")}


def _constant(name: str) -> str:
    header = (TENSORRT / "multilevel_roi_align_plugin.h").read_text()
    return re.search(rf'constexpr char {name}\[\] = "([^"]*)"', header).group(1)


def test_plugin_name_and_version_are_the_op_spec():
    assert _constant("kPluginName") == op_spec.OP_TYPE
    assert _constant("kPluginVersion") == str(op_spec.OP_VERSION)


def test_plugin_fields_are_the_op_spec_attributes_in_order():
    source = (TENSORRT / "multilevel_roi_align_attributes.cpp").read_text()
    table = source[source.index("kFieldSpecs[] = {"):source.index("};", source.index("kFieldSpecs[] = {"))]
    fields = re.findall(r'\{"(\w+)", PluginFieldType::(\w+), Shape::(\w+)\}', table)
    assert [(n, t, s) for n, t, s in fields] == [(n, *CPP_TYPE[kind]) for n, (kind, _) in op_spec.ATTRIBUTES.items()]


def test_the_op_type_is_written_nowhere_else():
    """No module but op_spec spells the op type as a string literal (the C++ plugin and docs aside)."""
    root = TENSORRT.parents[1]
    offenders = [str(path.relative_to(root)) for layer in ("common", "plugins", "model", "export", "calibration",
                                                          "runtime")
                 for path in (root / layer).rglob("*.py")
                 if path.name != "op_spec.py" and re.search(r'["\']MultiLevelRoIAlign["\']', path.read_text())]
    assert offenders == []
