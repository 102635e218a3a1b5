"""The command line's layout (issue 9): `lookout.cli` is a package of command modules that import
the library and the shared options, never each other in a cycle; the library never imports the
command line; options shared by several commands are declared once (`lookout.cli.options`)."""

from __future__ import annotations

import ast
from pathlib import Path

import click

from lookout.cli import main

SRC = Path(__file__).resolve().parents[3] / "src" / "lookout"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The lookout modules a file imports when it runs (imports under `if TYPE_CHECKING:` do not run)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for n in ast.walk(node)
    }
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                full = f"{node.module}.{a.name}"
                out.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out & known


def _graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in SRC.rglob("*.py")}
    return {m: _imports(p, set(files)) - {m} for m, p in files.items()}


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(graph[start])
    while todo:
        m = todo.pop()
        if m == goal:
            return True
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return False


def test_no_cli_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    cli = [m for m in graph if m.startswith("lookout.cli.")]
    assert len(cli) >= 10, cli
    cycles = [m for m in cli if _reaches(graph, m, m)]
    assert not cycles, f"import cycles through {cycles}"
    # the group imports the commands; a command never imports the group
    assert not [m for m in cli if "lookout.cli.root" in graph[m]]


def test_the_library_never_imports_the_command_line() -> None:
    graph = _graph()
    offenders = {
        m: sorted(d)
        for m, d in graph.items()
        if not m.startswith("lookout.cli") and m != "lookout.__main__"
        for d in [{x for x in d if x.startswith("lookout.cli")}]
        if d
    }
    assert not offenders, offenders


def test_every_command_is_registered_once() -> None:
    ctx = click.Context(main)
    names = main.list_commands(ctx)
    assert {"run", "replay", "ship", "produce", "consume", "count", "search", "serve", "spark", "check"} <= set(names)
    defined = []
    for path in (SRC / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" for d in node.decorator_list
            ):
                defined.append(node.name)
    assert len(defined) + 1 == len(names), (defined, names)  # + check, built from run's parameters


def test_the_console_script_entry_point_is_the_group() -> None:
    import lookout.cli

    assert lookout.cli.main is main and isinstance(main, click.Group)
