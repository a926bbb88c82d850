"""The package's import graph, built statically with `ast` (nothing is imported), and `torch_io` on fresh data.

Edges come from every `import` statement in every .py under diff2lip_jax/, at
module level and inside functions alike (a function-level import only defers a
circle, it does not remove it); imports under `if TYPE_CHECKING:` never run
and are left out. `from pkg import name` imports `pkg.name` when that is a
module, else `pkg`. Importing `a.b.c` also runs the `__init__` of `a` and `a.b`:
those implicit edges are added, except to the importer's own ancestor packages
(they are already initialising when the importer runs, so a submodule importing
a sibling is not a circle through its package). An explicit
`from diff2lip_jax.models import X` inside `diff2lip_jax/models/` does count:
it needs the package `__init__` to have run, a real circle if that `__init__`
imports the submodule.
"""

from __future__ import annotations

import ast
import os
import pathlib
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = "diff2lip_jax"
PKG_DIR = ROOT / PKG


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted(PKG_DIR.rglob("*.py"))}


MODULES = _modules()


class Edge:
    """`src` imports `dst` at `path:line` (`where`: "module" or the enclosing function), `implicit` for a parent `__init__`."""

    def __init__(self, src: str, dst: str, path: pathlib.Path, line: int, where: str, implicit: bool = False):
        self.src, self.dst, self.path, self.line, self.where, self.implicit = src, dst, path, line, where, implicit

    def __repr__(self) -> str:
        how = "implicitly (parent package)" if self.implicit else "imports"
        return f"{self.src} {how} {self.dst}  [{self.path.relative_to(ROOT)}:{self.line}, {self.where}]"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: pathlib.Path) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every runtime import statement in `path` with "module" or the enclosing function's name."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit_stmt(stmt, where)
                continue
            visit_stmt(child, where)

    def visit_stmt(child: ast.AST, where: str) -> None:
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append((child, where))
        # A class body runs where the class statement runs; a function body when called.
        visit(child, child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where)

    visit(ast.parse(path.read_text(), str(path)), "module")
    return found


def _resolve_base(module: str, path: pathlib.Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom reads from (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level - 1 > len(parts) - 1:
        raise ValueError(f"{path}:{node.lineno}: relative import beyond the top-level package")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _targets(module: str, path: pathlib.Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names of what the statement imports (`pkg.name` if that is one of our modules, else `pkg`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _resolve_base(module, path, node)
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if alias.name != "*" and sub in MODULES else base)
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def build_graph() -> tuple[dict[str, list[Edge]], dict[str, list[Edge]]]:
    """(edges among diff2lip_jax modules by source, imports of outside top-level names by source)."""
    internal: dict[str, list[Edge]] = {m: [] for m in MODULES}
    external: dict[str, list[Edge]] = {m: [] for m in MODULES}
    for module, path in MODULES.items():
        own = set(_ancestors(module))
        for node, where in _imports(path):
            for target in _targets(module, path, node):
                if target.split(".")[0] != PKG:
                    external[module].append(Edge(module, target.split(".")[0], path, node.lineno, where))
                    continue
                if target not in MODULES:  # `import diff2lip_jax.x.y` of a name that is no module: its module
                    while target not in MODULES and "." in target:
                        target = target.rpartition(".")[0]
                internal[module].append(Edge(module, target, path, node.lineno, where))
                for parent in _ancestors(target):
                    if parent not in own and parent != module:
                        internal[module].append(Edge(module, parent, path, node.lineno, where, implicit=True))
    return internal, external


def find_cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle (as its edges) per strongly connected component with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for e in graph[v]:
            if e.dst not in index:
                strongconnect(e.dst)
                low[v] = min(low[v], low[e.dst])
            elif e.dst in on_stack:
                low[v] = min(low[v], index[e.dst])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for comp in components:
        members = set(comp)
        self_loops = [e for e in graph[comp[0]] if e.dst == comp[0]]
        if len(comp) == 1 and not self_loops:
            continue
        if len(comp) == 1:
            cycles.append(self_loops[:1])
            continue
        # Shortest cycle through the component's first member (BFS inside the component).
        start = sorted(comp)[0]
        prev: dict[str, Edge] = {}
        frontier, seen, closing = [start], {start}, None
        while frontier and closing is None:
            nxt = []
            for v in frontier:
                for e in graph[v]:
                    if e.dst not in members:
                        continue
                    if e.dst == start:
                        closing = e
                        break
                    if e.dst not in seen:
                        seen.add(e.dst)
                        prev[e.dst] = e
                        nxt.append(e.dst)
                if closing is not None:
                    break
            frontier = nxt
        path = [closing]
        while path[0].src != start:
            path.insert(0, prev[path[0].src])
        cycles.append(path)
    return cycles


def _describe(cycles: list[list[Edge]]) -> str:
    return "\n\n".join("\n".join(f"  {e!r}" for e in c) for c in cycles)


def test_graph_sees_the_known_imports():
    """The builder itself: relative imports, `from pkg import module`, function-level imports."""
    internal, external = build_graph()
    edges = {(e.src, e.dst) for es in internal.values() for e in es}
    assert (f"{PKG}.models", f"{PKG}.models.syncnet") in edges  # `from diff2lip_jax.models.syncnet import (...)`
    assert (f"{PKG}.convert", f"{PKG}.checkpoint") in edges  # function-level, in _main
    assert (f"{PKG}.models.syncnet", f"{PKG}.torch_io") in edges
    assert (f"{PKG}.convert", f"{PKG}") not in edges  # own ancestor: no implicit edge
    assert any(e.dst == "numpy" for e in external[f"{PKG}.torch_io"])
    toy = [Edge("a", "b", ROOT, 1, "module"), Edge("b", "a", ROOT, 2, "f")]
    assert [[(e.src, e.dst) for e in c] for c in find_cycles({"a": toy[:1], "b": toy[1:]})] == [
        [("a", "b"), ("b", "a")]
    ]
    assert find_cycles({"a": toy[:1], "b": []}) == []


def test_no_import_cycle():
    internal, _ = build_graph()
    cycles = find_cycles(internal)
    assert not cycles, "import cycles among diff2lip_jax modules:\n" + _describe(cycles)


def test_torch_io_is_a_leaf():
    """torch_io imports no diff2lip_jax module; at module level only stdlib and numpy, torch/safetensors lazily."""
    internal, external = build_graph()
    module = f"{PKG}.torch_io"
    assert not internal[module], internal[module]
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    top = {e.dst for e in external[module] if e.where == "module"}
    assert top <= stdlib | {"numpy"}, top
    lazy = {e.dst for e in external[module] if e.where != "module"}
    assert lazy <= stdlib | {"numpy", "torch", "safetensors"}, lazy


def test_models_syncnet_reaches_neither_convert_nor_checkpoint():
    internal, _ = build_graph()
    reach, todo = set(), [f"{PKG}.models.syncnet"]
    while todo:
        for e in internal[todo.pop()]:
            if e.dst not in reach:
                reach.add(e.dst)
                todo.append(e.dst)
    direct = {e.dst for e in internal[f"{PKG}.models.syncnet"]}
    assert not direct & {f"{PKG}.convert", f"{PKG}.checkpoint"}, direct
    assert f"{PKG}.convert" not in reach and f"{PKG}.checkpoint" not in reach


def _config_imports() -> list[Edge]:
    _, external = build_graph()
    return [e for es in external.values() for e in es if e.dst in ("configs", "data_pipelines")]


def test_no_configs_or_data_pipelines_import():
    bad = _config_imports()
    assert not bad, "diff2lip_jax must not import configs/ or data_pipelines/:\n" + "\n".join(map(repr, bad))


# --------------------------------------------------------------------------- torch_io on fresh data


def _fresh_state_dict(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {
        "conv3.weight": (4, 3, 2, 3, 5),
        "conv2.weight": (8, 3, 3, 5),
        "conv2.bias": (8,),
        "conv1.weight": (6, 8, 3),
        "fc.weight": (7, 6),
        "fc.bias": (7,),
    }
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_file_round_trip(tmp_path, suffix):
    if suffix == ".pt":
        pytest.importorskip("torch")
    else:
        pytest.importorskip("safetensors")
    from diff2lip_jax import torch_io

    sd = _fresh_state_dict(11)
    path = tmp_path / f"weights{suffix}"
    torch_io.save_state_dict_file(sd, path)
    back = torch_io.load_state_dict_file(path)
    assert list(back) == (list(sd) if suffix == ".pt" else sorted(sd))  # safetensors stores keys sorted
    for k in sd:
        assert back[k].dtype == np.float32 and back[k].shape == sd[k].shape
        np.testing.assert_array_equal(back[k], sd[k])
    with pytest.raises(FileExistsError):
        torch_io.save_state_dict_file(sd, path)
    torch_io.save_state_dict_file({"x": np.zeros(2, np.float32)}, path, overwrite=True)
    assert list(torch_io.load_state_dict_file(path)) == ["x"]
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temporary file left behind
    with pytest.raises(FileNotFoundError, match="no such file"):
        torch_io.load_state_dict_file(tmp_path / f"absent{suffix}")


def test_pt_with_code_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    from diff2lip_jax import torch_io

    class Payload:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": Payload()}, path)
    with pytest.raises(torch_io.ConversionError, match="refused, the file holds pickled code"):
        torch_io.load_state_dict_file(path)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {"w": torch.ones(3, dtype=torch.float16)}, "step": 4}, wrapped)
    out = torch_io.load_state_dict_file(wrapped)
    assert list(out) == ["w"] and out["w"].dtype == np.float32 and (out["w"] == 1).all()


def test_kernel_transposes_invert_each_other_exactly():
    from diff2lip_jax import torch_io

    for key, w in _fresh_state_dict(12).items():
        if w.ndim < 2:
            continue
        k = torch_io.kernel_to_flax(w)
        assert k.shape == torch_io.kernel_shape_to_flax(w.shape)
        assert torch_io.kernel_shape_to_torch(k.shape) == w.shape
        np.testing.assert_array_equal(torch_io.kernel_to_torch(k), w, err_msg=key)
        np.testing.assert_array_equal(torch_io.kernel_to_flax(torch_io.kernel_to_torch(k)), k, err_msg=key)
    w = _fresh_state_dict(13)["conv2.weight"]  # [O, I, kh, kw] -> [kh, kw, I, O]
    np.testing.assert_array_equal(torch_io.kernel_to_flax(w), w.transpose(2, 3, 1, 0))
    fc = _fresh_state_dict(13)["fc.weight"]
    np.testing.assert_array_equal(torch_io.kernel_to_flax(fc), fc.T)
    with pytest.raises(ValueError):
        torch_io.kernel_to_flax(np.zeros(3))


def test_check_state_dict_names_the_bad_keys():
    from diff2lip_jax import torch_io

    sd = _fresh_state_dict(14)
    expected = {k: v.shape for k, v in sd.items()}
    got = torch_io.check_state_dict(
        torch_io.strip_prefixes({f"module.{k}": v for k, v in sd.items()} | {"bn.num_batches_tracked": 3}),
        expected,
        what="toy",
        ignore=("*num_batches_tracked",),
    )
    assert list(got) == list(sd) and all(np.array_equal(got[k], sd[k]) for k in sd)

    bad = dict(sd)
    del bad["conv1.weight"]
    bad["extra.weight"] = np.zeros(2, np.float32)
    bad["fc.bias"] = np.zeros(5, np.float32)
    with pytest.raises(torch_io.ConversionError) as err:
        torch_io.check_state_dict(bad, expected, what="not a toy state_dict", hint="try again")
    message = str(err.value)
    assert message.startswith("not a toy state_dict: ") and message.endswith("; try again")
    assert "missing keys ['conv1.weight']" in message
    assert "unexpected keys ['extra.weight']" in message
    assert "fc.bias: (5,), expected (7,)" in message
    assert isinstance(err.value, ValueError)
    assert torch_io.strip_prefixes({"module.__S__.a": 1}, ("module.", "__S__.")) == {"a": 1}
