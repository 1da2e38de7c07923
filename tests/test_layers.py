"""The import graph of the project points one way, down its layers:

    4 surfaces  (API routers, schemas, views, forms, admin, commands, tasks, urls)
    3 services  (services, jobs, evaluation: uploads, the job queue, generation actions,
                 running jobs, search, evaluation runs and the quality gate)
    2 domain    (models, selectors, migrations, generations: what a generation is)
    1 engines   (pipeline, embedders, connectors, stores, ranking: no Django)
    0 foundation (ragstudio.core: errors, bounds, vocabulary, engine types; settings)

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

# First match wins. Each rule names folders (a module or a package), the same in every app:
# the folder a module lives in says its layer.
RULES: list[tuple[str, int]] = [
    (r"ragstudio\.core(\..+)?", FOUNDATION),  # plain Python: errors, bounds, shared types
    (r"ragstudio\.(env|settings|settings_test)", FOUNDATION),  # configuration
    (r"(ingestion|search)\.(pipeline|embedders|connectors|stores|ranking)(\..+)?", ENGINES),
    (
        r"(knowledge_bases|ingestion|search)\.(models|selectors|migrations|generations)(\..+)?",
        DOMAIN,
    ),
    (r"(knowledge_bases|ingestion|search)\.(services|jobs|evaluation)(\..+)?", SERVICES),
    (r"(ragstudio|knowledge_bases|ingestion|search)(\..+)?", SURFACES),  # all the rest
]
# The engines run without Django: they may import only the plain core from below.
PURE_FOUNDATION = "ragstudio.core"
DJANGO_PACKAGES = ("django", "ninja", "django_q", "django_htmx")
# Function-local imports of project modules, each with its reason. Anything else must be
# imported at the top of its module (a local import is how an import cycle hides).
LOCAL_IMPORTS_ALLOWED = {
    # The providers import numpy/onnxruntime/openai: only the one a spec names is loaded.
    ("ingestion.embedders", "ingestion.embedders.local"),
    ("ingestion.embedders", "ingestion.embedders.openai_compat"),
    # AppConfig.ready runs before the app's modules may import models.
    ("ingestion.apps", "ingestion.schedules"),
    ("ingestion.apps", "ragstudio.readiness"),
    ("knowledge_bases.apps", "knowledge_bases.models"),
    ("knowledge_bases.apps", "knowledge_bases.signals"),
    # gunicorn reads its config before the app (and Django) is loaded.
    ("ragstudio.gunicorn_conf", "ragstudio.readiness"),
    # A subprocess entry point: Django is set up by main() before these are imported.
    ("ragstudio.testing.probe", "knowledge_bases.generations"),
    ("ragstudio.testing.probe", "knowledge_bases.models"),
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
                and not (e.target == PURE_FOUNDATION or e.target.startswith(PURE_FOUNDATION + "."))
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
    found = imports_of("search.ranking.fusion", engine, modules)
    assert [(i.target, i.local) for i in found] == [
        ("search.services", False),
        ("ingestion.jobs", True),
    ]
    assert layer_of("search.ranking.fusion") == ENGINES < layer_of("search.services") == SERVICES


def test_generations_are_reached_through_their_facade() -> None:
    """Outside ``knowledge_bases.generations`` its modules are imported from the package
    (its ``__init__``), never one by one."""
    _modules, edges = all_imports()
    facade = "knowledge_bases.generations"
    inside = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in edges
        if e.target.startswith(facade + ".") and not e.source.startswith(facade)
    ]
    assert not inside, "\n".join(inside)
