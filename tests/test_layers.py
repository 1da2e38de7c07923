"""The import graph of the project points one way, down the layers of the README:

    4 surfaces  (API routers, schemas, views, forms, admin, commands, tasks, urls)
    3 services  (uploads, the job queue, generation actions, running jobs, search)
    2 domain    (models, selectors, the generation lifecycle, the engines' Django adapter)
    1 engines   (pipeline, embedders, stores, fusion, filters: no Django)
    0 foundation (errors, bounds, settings)

Every project module is classified here; a new one fails this test until it is placed.
Imports are read with ``ast``, not by importing, so a function-local import counts too."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ragstudio", "knowledge_bases", "ingestion", "search")
FOUNDATION, ENGINES, DOMAIN, SERVICES, SURFACES = range(5)
NAMES = ["foundation", "engines", "domain", "services", "surfaces"]

# First match wins. Patterns are regular expressions over dotted module names.
RULES: list[tuple[str, int]] = [
    (r"ragstudio\.(errors|bounds|formatting)", FOUNDATION),  # pure Python
    (r"ragstudio\.(env|settings|settings_test)", FOUNDATION),
    (r"ingestion\.(pipeline|embedders)(\..+)?", ENGINES),
    (r"search\.stores(\..+)?", ENGINES),
    (r"search\.(fusion|filters|vocabulary|results|metrics)", ENGINES),
    (r"(knowledge_bases|ingestion|search)\.(models|selectors)", DOMAIN),
    (r"(knowledge_bases|ingestion|search)\.migrations(\..+)?", DOMAIN),
    (r"knowledge_bases\.(lifecycle(\..+)?|engines|build_settings)", DOMAIN),
    (r"knowledge_bases\.services", SERVICES),
    (r"ingestion\.(services|jobs)(\..+)?", SERVICES),
    (r"search\.(services|evaluation)", SERVICES),
    (r"(knowledge_bases|ingestion|search)\.(api|schemas|views|forms|admin|urls|apps)", SURFACES),
    (r"(knowledge_bases|ingestion|search)\.management(\..+)?", SURFACES),
    (r"knowledge_bases\.templatetags(\..+)?", SURFACES),
    (r"ingestion\.(tasks|schedules|foreground|charts)", SURFACES),
    (r"ragstudio\.(api|auth|urls|views|wsgi|cli|schemas|middleware)", SURFACES),
    (r"ragstudio\.testing(\..+)?", SURFACES),  # workloads for tests and benchmarks
    (r"(ragstudio|knowledge_bases|ingestion|search)", SURFACES),  # the packages themselves
]
# The engines run without Django: they may import only these from the layer below.
PURE_FOUNDATION = {"ragstudio.errors", "ragstudio.bounds", "ragstudio.formatting"}
DJANGO_PACKAGES = ("django", "ninja", "django_q", "django_htmx")
# Function-local imports of project modules, each with its reason. Anything else must be
# imported at the top of its module (a local import is how an import cycle hides).
LOCAL_IMPORTS_ALLOWED = {
    # The providers import numpy/onnxruntime/openai: only the one a spec names is loaded.
    ("ingestion.embedders", "ingestion.embedders.local"),
    ("ingestion.embedders", "ingestion.embedders.openai_compat"),
    # AppConfig.ready runs before the app's modules may import models.
    ("ingestion.apps", "ingestion.schedules"),
    # A subprocess entry point: Django is set up by main() before these are imported.
    ("ragstudio.testing.probe", "knowledge_bases.engines"),
    ("ragstudio.testing.probe", "knowledge_bases.models"),
    ("ragstudio.testing.probe", "knowledge_bases.selectors"),
}


@dataclass(frozen=True)
class Import:
    source: str
    target: str
    line: int
    local: bool  # inside a function
    runtime: bool  # False under `if TYPE_CHECKING:`


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int | None:
    for pattern, layer in RULES:
        if re.fullmatch(pattern, module):
            return layer
    return None


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, local: bool, runtime: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_local = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            child_runtime = runtime and not (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                # `from pkg import mod` imports pkg.mod when it is a module.
                names = [f"{child.module}.{alias.name}" for alias in child.names]
            targets = {_resolve(name, modules) or name for name in names}  # one per module
            for target in sorted(targets - {module}):
                found.append(Import(module, target, child.lineno, local, runtime))
            visit(child, child_local, child_runtime)

    visit(tree, False, True)
    return found


def all_imports() -> tuple[dict[str, Path], list[Import]]:
    modules = project_modules()
    edges = [i for m, p in sorted(modules.items()) for i in imports_of(m, p, modules)]
    return modules, edges


def test_every_module_has_a_layer() -> None:
    modules = project_modules()
    assert len(modules) > 50  # the walk found the project
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    assert not unplaced, f"place these modules in a layer in tests/test_layers.py: {unplaced}"


def test_imports_point_down_the_layers() -> None:
    modules, edges = all_imports()
    upward = []
    for edge in edges:
        if edge.target not in modules:
            continue
        source, target = layer_of(edge.source), layer_of(edge.target)
        assert source is not None and target is not None
        if target > source:
            upward.append(
                f"{edge.source}:{edge.line} ({NAMES[source]}) imports "
                f"{edge.target} ({NAMES[target]})"
            )
    assert not upward, "\n".join(upward)


def test_the_engines_import_no_django() -> None:
    modules, edges = all_imports()
    wrong = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in edges
        if layer_of(e.source) == ENGINES
        and (
            e.target.split(".")[0] in DJANGO_PACKAGES
            or (
                e.target in modules
                and layer_of(e.target) == FOUNDATION
                and e.target not in PURE_FOUNDATION
            )
        )
    ]
    assert not wrong, "\n".join(wrong)


def test_no_function_local_imports_of_project_modules() -> None:
    modules, edges = all_imports()
    local = [
        f"{e.source}:{e.line} imports {e.target} inside a function"
        for e in edges
        if e.local and e.target in modules and (e.source, e.target) not in LOCAL_IMPORTS_ALLOWED
    ]
    assert not local, "\n".join(local)


def test_no_import_cycles() -> None:
    modules, edges = all_imports()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        if e.runtime and e.target in modules:
            graph[e.source].add(e.target)
            # Importing a.b.c runs the __init__ of a.b first.
            parent = e.target.rpartition(".")[0]
            if parent in modules and parent != e.source and not e.source.startswith(parent):
                graph[e.source].add(parent)
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert not cycles, "\n".join(cycles)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The walk itself: an engine that imports a service is reported."""
    engine = tmp_path / "engine.py"
    engine.write_text(
        "from search.services import knowledge_base_search\n"
        "def f():\n    from ingestion.jobs import job_claim\n"
    )
    modules = project_modules()
    found = imports_of("search.fusion", engine, modules)
    assert [(i.target, i.local) for i in found] == [
        ("search.services", False),
        ("ingestion.jobs", True),
    ]
    assert layer_of("search.fusion") == ENGINES < layer_of("search.services") == SERVICES
