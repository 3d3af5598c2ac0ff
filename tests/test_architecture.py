"""The package's layers (docs/ARCHITECTURE.md): each module imports only modules of its own layer
or of layers below it, and the import graph has no cycle. Imports inside functions count too."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dldl"

LAYERS = [
    ("foundation", ["dldl.errors", "dldl.lazy", "dldl.files", "dldl.assets", "dldl.progress", "dldl.devices", "dldl.config"]),
    ("labels and objectives", ["dldl.labels", "dldl.losses", "dldl.metrics"]),
    ("images and faces", ["dldl.data.images", "dldl.data.preprocess", "dldl.faces", "dldl.faces.detect", "dldl.faces.align",
                          "dldl.faces.yunet"]),
    ("datasets", ["dldl.data", "dldl.data.samples", "dldl.data.sources", "dldl.data.datasets", "dldl.data.cache",
                  "dldl.data.augment"]),
    ("networks", ["dldl.models", "dldl.models.registry", "dldl.models.vgg", "dldl.models.mobilenet", "dldl.models.dlib_resnet",
                  "dldl.models.ensemble", "dldl.models.spec", "dldl.models.readout", "dldl.models.backbone_weights",
                  "dldl.checkpoint"]),
    ("runtime", ["dldl.runtime", "dldl.export", "dldl.graphcheck"]),
    ("hub", ["dldl.hub"]),
    ("pipeline", ["dldl.results", "dldl.predictor", "dldl.video", "dldl.annotate", "dldl.outputs", "dldl.parquet"]),
    ("evaluation", ["dldl.evaluate", "dldl.plots"]),
    ("training", ["dldl.training", "dldl.training.config", "dldl.training.mixing", "dldl.training.runs",
                  "dldl.training.train"]),
    ("release", ["dldl.release"]),
    ("scale", ["dldl.batch"]),
    ("apps", ["dldl", "dldl.cli", "dldl.serve"]),
]
"""Bottom to top. A new module gets a row here (the test below refuses a module that has none)."""

LAYER_OF = {module: i for i, (_, modules) in enumerate(LAYERS) for module in modules}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The dldl modules ``path`` imports (``from dldl import x`` is module ``dldl.x`` when there is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "dldl"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dldl" and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            found |= subs or {node.module}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_module_has_a_layer():
    missing = sorted(set(modules()) - set(LAYER_OF))
    gone = sorted(set(LAYER_OF) - set(modules()))
    assert not missing, f"modules without a layer in LAYERS (add them, see docs/ARCHITECTURE.md): {missing}"
    assert not gone, f"LAYERS names modules that do not exist: {gone}"


def test_no_import_goes_upwards():
    upwards = [f"{m} ({LAYERS[LAYER_OF[m]][0]}) imports {d} ({LAYERS[LAYER_OF[d]][0]})"
               for m, deps in graph().items() for d in sorted(deps)
               if m in LAYER_OF and d in LAYER_OF and LAYER_OF[d] > LAYER_OF[m]]
    assert not upwards, "imports that go up a layer:\n" + "\n".join(upwards)


def test_the_import_graph_has_no_cycle():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checks above can fail: a module of the foundation importing the hub is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from dldl.hub import load\n    from dldl import files\n")
    assert imports(bad, {"dldl.hub", "dldl.files"}) == {"dldl.hub", "dldl.files"}
    assert LAYER_OF["dldl.hub"] > LAYER_OF["dldl.files"]
