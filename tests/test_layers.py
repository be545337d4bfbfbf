"""The package is a layered building: every module imports only from its own floor and the floors below,
no module-level imports form a cycle, argument parsing lives in the commands, weights files are read
and written in one module, and lazy imports are the few that keep start-up light.

Imports are read with ``ast`` (nothing is executed), so a hidden function-local import counts too.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "affectsr"

FLOORS: list[tuple[str, ...]] = [
    # 0, the ground floor: plain helpers every floor may use
    ("affectsr.atomic", "affectsr.images", "affectsr.faces", "affectsr.weights", "affectsr.runinfo", "affectsr.metrics",
     "affectsr.types", "affectsr.overrides", "affectsr.warp", "affectsr.plots", "affectsr.assets", "affectsr.progress"),
    ("affectsr.models",),  # 1: the networks (a leaf apart from the ground floor)
    ("affectsr.landmarks",),  # 2: MediaPipe detection and the learned LR predictor
    ("affectsr.emotion", "affectsr.identity"),  # 3: FER classifier, loss, metrics, face crops, the study; identity
    ("affectsr.data",),  # 4: training caches, degradations, batches
    ("affectsr.pipeline",),  # 5: detect, crop, super-resolve, paste back
    ("affectsr.evaluate", "affectsr.export", "affectsr.video", "affectsr.demo"),  # 6: uses of the pipeline
    ("affectsr.train", "affectsr.fairness", "affectsr.bench", "affectsr.serve"),  # 7: built on evaluation / export
    ("affectsr.commands",),  # 8: every subcommand (argparse lives here)
    ("affectsr.cli", "affectsr.__main__", "affectsr"),  # 9: entry points and the public facade
]

LAZY = {
    "mediapipe": "about a second to import; only detection needs it",
    "cv2": "OpenCV (which mediapipe brings) runs the detector's fine pass; only detection needs it",
    "gradio": "the optional [web] extra",
    "av": "PyAV loads FFmpeg's libraries; only video needs them",
    "matplotlib": "slow to import; only figure writers need it",
    "scipy": "only the mouth-mask occluder needs scipy.spatial",
    "dlib": "the optional [identity] extra (a compiled wheel); only identity scoring needs it",
    "skimage": "only optical flow and the bundled test face need scikit-image's submodules",
}
"""Function-local imports of other packages kept on purpose (package -> why); every other import is module-level."""

LAZY_INTERNAL = {("affectsr", "affectsr.pipeline"): "`import affectsr` loads the models only"}
"""(importer, imported) pairs of the package imported inside a function on purpose."""

FOREIGN_CHECKPOINTS = {"affectsr.models.rrdb"}
"""Reads ESRGAN/BasicSR checkpoints (not affectsr weights files) with safetensors / torch.load(weights_only=True)."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) for one import statement."""
    if isinstance(node, ast.Import):
        return [(a.name, []) for a in node.names]
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [(target, [a.name for a in node.names])]


def _imports() -> dict[str, list[tuple[str, list[str], bool, int]]]:
    """module -> [(imported module, names, at module level, line)]."""
    out: dict[str, list] = {}
    for path in sorted(PKG.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))}
        local = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        rows = []
        for node in ast.walk(tree):
            if id(node) in top:
                for target, names in _resolve(module, path.name == "__init__.py", node):
                    rows.append((target, names, id(node) not in local, node.lineno))
        out[module] = rows
    return out


IMPORTS = _imports()


def _floor(module: str) -> int:
    best, floor = -1, None
    for i, members in enumerate(FLOORS):
        for m in members:
            if (module == m or module.startswith(m + ".")) and len(m) > best:
                best, floor = len(m), i
    if floor is None:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS in tests/test_layers.py")
    return floor


def _internal(target: str) -> bool:
    return target == "affectsr" or target.startswith("affectsr.")


def test_every_module_is_on_a_floor():
    for module in IMPORTS:
        _floor(module)


def test_no_import_goes_up_a_floor():
    upward = [f"{m}:{line} imports {t} (floor {_floor(m)} -> {_floor(t)})"
              for m, rows in IMPORTS.items() for t, _, _, line in rows if _internal(t) and _floor(t) > _floor(m)]
    assert not upward, "\n".join(upward)


def test_models_are_a_leaf_apart_from_the_ground_floor():
    bad = [f"{m} imports {t}" for m, rows in IMPORTS.items() if m.startswith("affectsr.models")
           for t, _, _, _ in rows if _internal(t) and not t.startswith("affectsr.models") and _floor(t) != 0]
    assert not bad, bad


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_cycle_finder():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle():
    graph: dict[str, set[str]] = defaultdict(set)
    for m, rows in IMPORTS.items():
        for t, names, top, _ in rows:
            if not (top and _internal(t)):
                continue
            for dep in [f"{t}.{n}" for n in names if f"{t}.{n}" in IMPORTS] or [t]:
                if dep != m and dep in IMPORTS:
                    graph[m].add(dep)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_argparse_only_in_the_commands():
    bad = [m for m, rows in IMPORTS.items() for t, _, _, _ in rows
           if t == "argparse" and not (m.startswith("affectsr.commands") or m == "affectsr.cli")]
    assert not bad, f"argparse outside affectsr.commands: {bad}"


def test_weights_files_are_read_and_written_in_one_module():
    bad = [m for m, rows in IMPORTS.items() for t, _, _, _ in rows
           if t.split(".")[0] == "safetensors" and m not in {"affectsr.weights", *FOREIGN_CHECKPOINTS}]
    assert not bad, f"safetensors used outside affectsr.weights: {bad}"


def test_function_local_imports_are_only_the_lazy_ones():
    bad = [f"{m}:{line} imports {t} inside a function" for m, rows in IMPORTS.items() for t, _, top, line in rows
           if not top and not any(t == k or t.startswith(k + ".") for k in LAZY) and (m, t) not in LAZY_INTERNAL
           and m not in FOREIGN_CHECKPOINTS]
    assert not bad, "\n".join(bad) + "\n(move them to the top of the module, or add the reason to LAZY)"


def test_no_private_names_across_modules():
    bad = [f"{m} imports {t}.{n}" for m, rows in IMPORTS.items() for t, names, _, _ in rows if _internal(t)
           for n in names if n.startswith("_") and not n.startswith("__") and t != m]
    assert not bad, bad
