"""The clean-up of the traced ONNX graph: onnxscript's optimizer, as `torch.onnx.export(optimize=True)` runs it,
without its SlicesSplit rewrite.

SlicesSplit is onnxscript's one rewrite rule with two output nodes. Its matcher, for every Slice of the graph, lists
every node of the graph and tries every pair of Slices (onnxscript/rewriter/_matcher.py: "potentially expensive"):
on the deploy graph, thousands of nodes and hundreds of Slices, that is 37 s of a small R18's standard-ops export,
where every other pass together takes 3.6 s. It also turns two Slices into a Split that it can place after their
users (export/onnx_ops.py reads columns with Gather for that reason), and on the deploy graphs it merges nothing: the
graphs are byte for byte those of the stock optimizer (tests/test_export_onnx.py). The passes below are onnxscript's
`optimize_ir` followed by its ONNX fusions (onnxscript/_framework_apis/torch_2_8.py `optimize`), rule list filtered.
"""

from __future__ import annotations

__all__ = ["optimize_graph", "SKIPPED_RULES"]

SKIPPED_RULES = ("SlicesSplit",)


def optimize_graph(model) -> None:
    """Optimize the onnx_ir.Model `model` in place, as torch.onnx.export(optimize=True) would, minus SKIPPED_RULES.
    With an onnxscript that no longer has the pieces named below, its stock optimizer runs instead (slower, the
    same graph)."""
    import onnxscript
    from onnxscript.rewriter import onnx_fusions

    try:
        passes = _optimize_ir_passes()
    except (ImportError, AttributeError):
        onnxscript.optimizer.optimize_ir(model)
    else:
        passes(model)
    onnx_fusions.fuse(model)


def _optimize_ir_passes():
    """onnxscript.optimizer.optimize_ir's passes with its defaults, its rewrite rules less SKIPPED_RULES."""
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript import rewriter
    from onnxscript.optimizer import _constant_folding as folding

    rules = [rule for rule in rewriter._DEFAULT_REWRITE_RULES if rule.name not in SKIPPED_RULES]
    fold = folding.FoldConstantsPass(shape_inference=True,
                                     input_size_limit=folding.DEFAULT_CONSTANT_FOLD_INPUT_SIZE_LIMIT,
                                     output_size_limit=folding.DEFAULT_CONSTANT_FOLD_OUTPUT_SIZE_LIMIT,
                                     should_fold=lambda node: None)
    loop = ir.passes.PassManager([fold, rewriter.RewritePass(rules), common.RemoveUnusedNodesPass(),
                                  common.RemoveUnusedFunctionsPass(), common.RemoveUnusedOpsetsPass()],
                                 steps=2, early_stop=True)
    return ir.passes.Sequential(
        common.InlinePass(), loop, common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.LiftSubgraphInitializersToMainGraphPass(), common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(), common.OutputFixPass(), common.NameFixPass())
