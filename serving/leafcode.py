"""The forest as native code that says which leaf each row reaches in every tree.

Why leaves rather than scores: a request needs the scores of all its rows and, for the offers
it returns, their leaves (reasons are precomputed per (tree, leaf), serving.explain). A compiled
forest that only sums left LightGBM's `pred_leaf` on every request for the reasons: a second
engine, with its own cold caches, costing as much as the compiled sum itself. Here lleaves' own
parser and per-tree code generator (lleaves 1.3.0, pinned) are driven by a root function of ours
that stores each tree's leaf index; the score is then the leaves' outputs added in LightGBM's
order (serving.explain.leaf_sums), the bits of the leaf-sum path. Trees run in blocks of
BLOCK_TREES over all rows, as lleaves does, so one block's code stays in the instruction cache.

The object code also answers its own shape (features read, trees written), so code built for
another model is refused before it can read or write outside the arrays it is given.
"""

from __future__ import annotations

import ctypes
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = "offers_leaf_root"  # void(double* rows, int32* leaves, int32 start, int32 end)
N_FEATURES = "offers_leaf_n_features"  # int32(): columns each row must have
N_TREES = "offers_leaf_n_trees"  # int32(): leaves written per row
BLOCK_TREES = 34  # trees per cache block (lleaves' default fblocksize)
CODE_MODEL = "large"  # small segfaults on large forests (lleaves' docs)
OPTIONS = {"root": ROOT, "block_trees": BLOCK_TREES, "code_model": CODE_MODEL, "inline": True}

_ROOT_ARGS = (
    ctypes.POINTER(ctypes.c_double),
    ctypes.POINTER(ctypes.c_int32),
    ctypes.c_int32,
    ctypes.c_int32,
)


def leaf_index_text(model_text: str) -> str:
    """The model text with every leaf's value replaced by the leaf's index (0, 1, ...)."""
    if not re.search(r"^num_class=1$", model_text, flags=re.M):
        raise ValueError("the compiled leaf forest takes single-output models (num_class=1)")

    def indices(match: re.Match[str]) -> str:
        return "leaf_value=" + " ".join(map(str, range(len(match.group(1).split()))))

    return re.sub(r"^leaf_value=(.*)$", indices, model_text, flags=re.M)


def compile_file(model_file: str, code_file: str) -> None:
    """Object code of the leaf forest of LightGBM's model text in `model_file`, to `code_file`."""
    import llvmlite.binding as llvm
    from lleaves.llvm_binding import compile_module_to_asm

    leaf_file = Path(code_file).with_suffix(".leaves.txt")
    leaf_file.write_text(leaf_index_text(Path(model_file).read_text(encoding="utf-8")))
    try:
        module = llvm.parse_assembly(_ir(str(leaf_file)))
    finally:
        leaf_file.unlink(missing_ok=True)
    module.verify()
    builder = llvm.PassManagerBuilder()
    builder.opt_level = 3
    builder.inlining_threshold = 1  # lleaves' finline: each tree inlined into the root
    passes = llvm.ModulePassManager()
    builder.populate(passes)
    passes.run(module)
    compile_module_to_asm(module, code_file, fcodemodel=CODE_MODEL)  # writes code_file


def _ir(leaf_file: str) -> str:
    """LLVM IR: lleaves' function per tree, our root storing each tree's leaf index per row."""
    import llvmlite.binding as llvm
    from lleaves.compiler.ast import parse_to_ast
    from lleaves.compiler.codegen.codegen import gen_tree
    from llvmlite import ir

    double, int32, int64 = ir.DoubleType(), ir.IntType(32), ir.IntType(64)
    forest = parse_to_ast(leaf_file)
    module = ir.Module(name="offers_leaves")
    trees = []
    for tree in forest.trees:
        args = [int32 if f.is_categorical else double for f in tree.features]
        func = ir.Function(module, ir.FunctionType(double, args), name=str(tree))
        func.linkage = "private"
        gen_tree(tree, func, True)
        trees.append(func)
    for name, value in ((N_FEATURES, forest.n_args), (N_TREES, len(trees))):
        b = ir.IRBuilder(ir.Function(module, ir.FunctionType(int32, ()), name).append_basic_block())
        b.ret(ir.Constant(int32, value))
    root_type = ir.FunctionType(
        ir.VoidType(), (double.as_pointer(), int32.as_pointer(), int32, int32)
    )
    root = ir.Function(module, root_type, name=ROOT)
    rows, out, start, end = root.args
    b = ir.IRBuilder(root.append_basic_block("entry"))
    row_var = b.alloca(int64, 1, "row")
    first_row, end_row = b.sext(start, int64), b.sext(end, int64)
    for first in range(0, len(trees), BLOCK_TREES):
        b.store(first_row, row_var)
        test, body, done = (
            root.append_basic_block(f"{s}{first}") for s in ("test", "body", "done")
        )
        b.branch(test)
        b = ir.IRBuilder(test)
        b.cbranch(b.icmp_signed("<", b.load(row_var), end_row), body, done)
        b = ir.IRBuilder(body)
        row = b.load(row_var)
        base = b.mul(row, ir.Constant(int64, forest.n_args))
        values = []
        for k, feature in enumerate(forest.features):
            v = b.load(b.gep(rows, (b.add(base, ir.Constant(int64, k)),)))
            if feature.is_categorical:  # as lleaves' root: NaN goes right, else the integer
                nan = b.fcmp_ordered("uno", v, ir.Constant(double, 0.0))
                v = b.select(nan, ir.Constant(int32, -(2**31)), b.fptosi(v, int32))
            values.append(v)
        out_base = b.mul(row, ir.Constant(int64, len(trees)))
        for t in range(first, min(first + BLOCK_TREES, len(trees))):
            leaf = b.fptosi(b.call(trees[t], values), int32)
            b.store(leaf, b.gep(out, (b.add(out_base, ir.Constant(int64, t)),)))
        b.store(b.add(row, ir.Constant(int64, 1)), row_var)
        b.branch(test)
        b = ir.IRBuilder(done)
    b.ret_void()
    module.triple = llvm.get_process_triple()
    return str(module)


class ShapeMismatchError(ValueError):
    """Object code built for a model of another shape: never called."""


class NativeLeaves:
    """Loaded object code: `leaves(X)` is LightGBM's `pred_leaf` for X, as int32."""

    def __init__(self, code: bytes, n_features: int, n_trees: int) -> None:
        import llvmlite.binding as llvm
        from lleaves.llvm_binding import compile_module_to_asm

        with tempfile.TemporaryDirectory(prefix="offers-leaves-") as tmp:
            code_file = Path(tmp, "forest.o")
            code_file.write_bytes(code)
            # An empty module: the engine takes the object code from the cache file.
            self._engine: Any = compile_module_to_asm(
                llvm.parse_assembly(""), str(code_file), fcodemodel=CODE_MODEL
            )
        shape = tuple(
            ctypes.CFUNCTYPE(ctypes.c_int32)(self._engine.get_function_address(name))()
            for name in (N_FEATURES, N_TREES)
        )
        if shape != (n_features, n_trees):
            raise ShapeMismatchError(
                f"compiled leaf forest reads {shape[0]} features and writes {shape[1]} trees; "
                f"the model has {n_features} and {n_trees}"
            )
        self.n_features, self.n_trees = n_features, n_trees
        self._root = ctypes.CFUNCTYPE(None, *_ROOT_ARGS)(self._engine.get_function_address(ROOT))

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """rows x trees: the leaf each row reaches in each tree (the calling thread only)."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features or len(X) >= 2**31:
            raise ValueError(f"rows must be (n < 2**31, {self.n_features}), got {X.shape}")
        out = np.empty((len(X), self.n_trees), dtype=np.int32)
        self._root(X.ctypes.data_as(_ROOT_ARGS[0]), out.ctypes.data_as(_ROOT_ARGS[1]), 0, len(X))
        return out
