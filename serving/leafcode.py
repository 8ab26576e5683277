"""The forest as native code that says which leaf each row reaches in every tree.

Why leaves rather than scores: a request needs the scores of all its rows and, for the offers
it returns, their leaves (reasons are precomputed per (tree, leaf), serving.explain). A compiled
forest that only sums left LightGBM's `pred_leaf` on every request for the reasons: a second
engine, with its own cold caches, costing as much as the compiled sum itself. Here lleaves' own
parser and per-tree code generator (lleaves 1.3.0, pinned) are driven by a root function of ours
that stores each tree's leaf index and adds the leaves' outputs in LightGBM's order (tree by
tree from 0.0, no reassociation): the raw score of `Booster.predict`, bit for bit, the same as
the leaf-sum path (serving.explain.PathExplainer.scores). Trees run in blocks of BLOCK_TREES over all rows,
as lleaves does, so one block's code stays in the instruction cache.

The object code also answers its own shape (features read, trees written), so code built for
another model is refused before it can read or write outside the arrays it is given.
"""

from __future__ import annotations

import ctypes
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ABI = 2  # in every symbol's name: code of another ABI lacks them and is refused, never called
ROOT = (
    f"offers_leaf_v{ABI}_root"  # void(double* rows, int32* leaves, double* raw, int32 start, end)
)
N_FEATURES = f"offers_leaf_v{ABI}_n_features"  # int32(): columns each row must have
N_TREES = f"offers_leaf_v{ABI}_n_trees"  # int32(): leaves written per row
SYMBOLS = (ROOT, N_FEATURES, N_TREES)
BLOCK_TREES = 34  # trees per cache block (lleaves' default fblocksize)
CODE_MODEL = "large"  # small segfaults on large forests (lleaves' docs)
OPTIONS = {"root": ROOT, "block_trees": BLOCK_TREES, "code_model": CODE_MODEL, "inline": True}

_ROOT_ARGS = (
    ctypes.POINTER(ctypes.c_double),
    ctypes.POINTER(ctypes.c_int32),
    ctypes.POINTER(ctypes.c_double),
    ctypes.c_int32,
    ctypes.c_int32,
)
PREDICT_CHUNK_ROWS = 4096  # predict() holds the leaves of this many rows at a time


def check_supported(model_text: str) -> None:
    """ValueError naming why this model cannot be compiled: several outputs per row (multiclass),
    or an objective whose output transform this module does not apply."""
    if not re.search(r"^num_class=1$", model_text, flags=re.M):
        raise ValueError("the compiled leaf forest takes single-output models (num_class=1)")
    output_transform(model_text)


def leaf_index_text(model_text: str) -> str:
    """The model text with every leaf's value replaced by the leaf's index (0, 1, ...)."""
    check_supported(model_text)

    def indices(match: re.Match[str]) -> str:
        return "leaf_value=" + " ".join(map(str, range(len(match.group(1).split()))))

    return re.sub(r"^leaf_value=(.*)$", indices, model_text, flags=re.M)


def compile_file(model_file: str, code_file: str) -> None:
    """Object code of the leaf forest of LightGBM's model text in `model_file`, to `code_file`."""
    import llvmlite.binding as llvm
    from lleaves.llvm_binding import compile_module_to_asm

    model_text = Path(model_file).read_text(encoding="utf-8")
    leaf_file = Path(code_file).with_suffix(".leaves.txt")
    leaf_file.write_text(leaf_index_text(model_text))
    try:
        module = llvm.parse_assembly(_ir(str(leaf_file), leaf_output_table(model_text)))
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


def _ir(leaf_file: str, leaf_output: np.ndarray) -> str:
    """LLVM IR: lleaves' function per tree; our root stores each tree's leaf index per row and
    adds the leaf's output (`leaf_output`, trees x most leaves) to the row's raw score."""
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
    if leaf_output.shape[0] != len(trees):
        raise ValueError(f"{leaf_output.shape[0]} trees of leaf outputs for {len(trees)} trees")
    table_type = ir.ArrayType(double, leaf_output.size)
    table = ir.GlobalVariable(module, table_type, name="offers_leaf_output")
    table.initializer = ir.Constant(table_type, leaf_output.ravel().tolist())
    table.global_constant, table.linkage = True, "private"
    for name, value in ((N_FEATURES, forest.n_args), (N_TREES, len(trees))):
        b = ir.IRBuilder(ir.Function(module, ir.FunctionType(int32, ()), name).append_basic_block())
        b.ret(ir.Constant(int32, value))
    pointers = (double.as_pointer(), int32.as_pointer(), double.as_pointer())
    root = ir.Function(module, ir.FunctionType(ir.VoidType(), (*pointers, int32, int32)), ROOT)
    rows, out, raw, start, end = root.args
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
        values = _row_values(b, rows, row, forest.features)
        out_base = b.mul(row, ir.Constant(int64, len(trees)))
        raw_at = b.gep(raw, (row,))
        score = ir.Constant(double, 0.0) if first == 0 else b.load(raw_at)
        for t in range(first, min(first + BLOCK_TREES, len(trees))):
            leaf = b.fptosi(b.call(trees[t], values), int32)
            b.store(leaf, b.gep(out, (b.add(out_base, ir.Constant(int64, t)),)))
            at = b.add(b.sext(leaf, int64), ir.Constant(int64, t * leaf_output.shape[1]))
            score = b.fadd(score, b.load(b.gep(table, (ir.Constant(int64, 0), at))))
        b.store(score, raw_at)
        b.store(b.add(row, ir.Constant(int64, 1)), row_var)
        b.branch(test)
        b = ir.IRBuilder(done)
    b.ret_void()
    module.triple = llvm.get_process_triple()
    return str(module)


def _row_values(b: Any, rows: Any, row: Any, features: list[Any]) -> list[Any]:
    """IR loading one row's features as lleaves' trees take them: categorical ones as int32,
    NaN as the smallest int32 (always right), as lleaves' own root does."""
    from llvmlite import ir

    double, int32, int64 = ir.DoubleType(), ir.IntType(32), ir.IntType(64)
    base = b.mul(row, ir.Constant(int64, len(features)))
    values = []
    for k, feature in enumerate(features):
        v = b.load(b.gep(rows, (b.add(base, ir.Constant(int64, k)),)))
        if feature.is_categorical:
            nan = b.fcmp_ordered("uno", v, ir.Constant(double, 0.0))
            v = b.select(nan, ir.Constant(int32, -(2**31)), b.fptosi(v, int32))
        values.append(v)
    return values


class ShapeMismatchError(ValueError):
    """Object code built for a model of another shape: never called."""


class NativeLeaves:
    """Loaded object code: `run(X)` gives LightGBM's `pred_leaf` (int32) and raw score for X."""

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
        address = {name: self._engine.get_function_address(name) for name in SYMBOLS}
        missing = [name for name, at in address.items() if not at]
        if missing:  # built by another version of this module: its calling convention differs
            raise ShapeMismatchError(f"compiled leaf forest lacks {', '.join(missing)}")
        shape = tuple(ctypes.CFUNCTYPE(ctypes.c_int32)(address[n])() for n in (N_FEATURES, N_TREES))
        if shape != (n_features, n_trees):
            raise ShapeMismatchError(
                f"compiled leaf forest reads {shape[0]} features and writes {shape[1]} trees; "
                f"the model has {n_features} and {n_trees}"
            )
        self.n_features, self.n_trees = n_features, n_trees
        self._root = ctypes.CFUNCTYPE(None, *_ROOT_ARGS)(address[ROOT])

    def run(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x trees: the leaf each row reaches in each tree, each row's raw score), on the
        calling thread."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features or len(X) >= 2**31:
            raise ValueError(f"rows must be (n < 2**31, {self.n_features}), got {X.shape}")
        leaves = np.empty((len(X), self.n_trees), dtype=np.int32)
        raw = np.empty(len(X), dtype=np.float64)
        args = (X.ctypes.data_as(_ROOT_ARGS[0]), leaves.ctypes.data_as(_ROOT_ARGS[1]))
        self._root(*args, raw.ctypes.data_as(_ROOT_ARGS[2]), 0, len(X))
        return leaves, raw


class CompiledForest:
    """The model's native leaf code and output; pickles as model text and code (batch workers)."""

    def __init__(self, model_text: str, code: bytes) -> None:
        self.model_text = model_text
        self.code = code
        self._output = output_transform(model_text)
        n_features = int(_header_value(model_text, "max_feature_idx")) + 1
        n_trees = len(re.findall(r"^Tree=", model_text, flags=re.M))
        self._native = NativeLeaves(code, n_features, n_trees)

    def leaves_and_scores(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows x trees: LightGBM's `pred_leaf`, its `predict`): exact leaves, scores within
        TOLERANCE (bit for bit for rankers, whose output is the raw score); checked at load."""
        leaves, raw = self._native.run(X)
        return leaves, self._output(raw)

    def leaves(self, X: np.ndarray) -> np.ndarray:
        return self.leaves_and_scores(X)[0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        """`Booster.predict(X)`; a big batch in chunks, its leaves not kept."""
        chunks = [
            self.leaves_and_scores(X[i : i + PREDICT_CHUNK_ROWS])[1]
            for i in range(0, len(X), PREDICT_CHUNK_ROWS)
        ]
        return np.concatenate(chunks) if chunks else np.empty(0)

    def __getstate__(self) -> dict[str, Any]:
        return {"model_text": self.model_text, "code": self.code}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_text"], state["code"])


def leaf_output_table(model_text: str) -> np.ndarray:
    """trees x most leaves: each leaf's output, read from the text (LightGBM writes 17
    significant digits, which read back to the same doubles as `get_leaf_output`)."""
    trees = [
        np.array(line.split(), dtype=np.float64)
        for line in re.findall(r"^leaf_value=(.*)$", model_text, flags=re.M)
    ]
    table = np.zeros((len(trees), max((len(t) for t in trees), default=1)))
    for i, values in enumerate(trees):
        table[i, : len(values)] = values
    return table


def output_transform(model_text: str) -> Callable[[np.ndarray], np.ndarray]:
    """What `Booster.predict` does to the raw score: nothing for rankers and regression,
    LightGBM's sigmoid for `binary`; any other objective is refused (the Booster scores it)."""
    objective = _header_value(model_text, "objective").split()
    if objective[0] in ("lambdarank", "rank_xendcg", "regression", "regression_l2"):
        return _identity
    if objective[0] == "binary":
        alpha = float(dict(o.split(":", 1) for o in objective[1:]).get("sigmoid", "1"))
        return lambda raw: 1.0 / (1.0 + np.exp(-alpha * raw))
    raise ValueError(f"objective {objective[0]!r}: no compiled output for it")


def _identity(raw: np.ndarray) -> np.ndarray:
    return raw


def _header_value(model_text: str, key: str) -> str:
    found = re.search(rf"^{key}=(.*)$", model_text, flags=re.M)
    if found is None:
        raise ValueError(f"the model text has no {key}= line")
    return found.group(1)
