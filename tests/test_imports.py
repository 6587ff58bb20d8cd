"""Static import rules of the project (AST only: nothing is imported).

Over every module of ``mango/``, ``generators/`` (installed as ``mango.generators``)
and ``targets/`` (``mango.targets``), counting module-level AND function-local
imports (``if TYPE_CHECKING:`` blocks excepted):

(a) no import cycle between project modules;
(b) the engine (``mango.*`` outside the two plug-in packages) never imports
    ``mango.generators`` or ``mango.targets``;
(c) ``mango.generators`` and ``mango.targets`` never import each other;
(d) no module imports a private name (leading underscore) from another project module.

The analysis is in :func:`project_imports` so a failing rule names file and line.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: source folder -> installed package name
PACKAGES = {"mango": "mango", "generators": "mango.generators", "targets": "mango.targets"}

#: Exemptions (rule, importing module, imported module[.name]); empty: every rule holds everywhere.
KNOWN_OFFENDERS: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Import:
    """One import statement resolved to project module names."""

    module: str          # the importing module
    target: str          # the imported project module
    names: tuple[str, ...]  # names taken from it (``from target import a, b``); () for ``import target``
    line: int
    local: bool          # inside a function / method

    def where(self) -> str:
        return f"{self.module}:{self.line}"


def module_files() -> dict[str, Path]:
    """Installed module name -> source file, for every project module."""
    out: dict[str, Path] = {}
    for folder, pkg in PACKAGES.items():
        base = ROOT / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([pkg, *parts]) if parts else pkg
            if folder == "mango" and name.split(".")[1:2] in (["generators"], ["targets"]):
                continue  # not part of the engine tree (would be a stray copy)
            out[name] = path
    return out


def _resolve(module: str, is_pkg: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def project_imports() -> list[Import]:
    """Every import of a project module by a project module (module-level and local)."""
    files = module_files()
    known = set(files)
    out: list[Import] = []

    def project_module(name: str) -> str | None:
        while name:
            if name in known:
                return name
            name = name.rpartition(".")[0]
        return None

    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))

        def visit(node: ast.AST, local: bool) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _is_type_checking(child):
                    for sub in child.orelse:
                        visit(sub, local)
                    continue
                inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, ast.Import):
                    for a in child.names:
                        tgt = project_module(a.name)
                        if tgt:
                            out.append(Import(mod, tgt, (), child.lineno, local))
                elif isinstance(child, ast.ImportFrom):
                    base = _resolve(mod, is_pkg, child.level, child.module)
                    if not base.startswith("mango"):
                        continue
                    for a in child.names:
                        sub = f"{base}.{a.name}"
                        if sub in known:  # ``from pkg import submodule``
                            out.append(Import(mod, sub, (), child.lineno, local))
                        else:
                            tgt = project_module(base)
                            if tgt:
                                out.append(Import(mod, tgt, (a.name,), child.lineno, local))
                visit(child, inner)

        visit(tree, False)
    return out


def _area(module: str) -> str:
    for pkg in ("mango.generators", "mango.targets"):
        if module == pkg or module.startswith(pkg + "."):
            return pkg
    return "mango"


def _known(rule: str, imp: Import, what: str) -> bool:
    return (rule, imp.module, what) in KNOWN_OFFENDERS


def find_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a self-import), via Tarjan."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if _known("cycle", imp, imp.target):
            continue
        graph.setdefault(imp.module, set()).add(imp.target)
        graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return comps


# -- the rules ---------------------------------------------------------------------------------
def test_analysis_sees_imports():
    """The checker itself works: it finds known module-level and local imports."""
    imps = project_imports()
    assert any(i.module == "mango.config" and i.target == "mango.registry" for i in imps)
    assert any(i.module == "mango.generators.vqvae" and i.target == "mango.generators.common" for i in imps)
    assert any(i.local for i in imps), "function-local imports must be analysed too"


def test_no_import_cycles():
    cycles = find_cycles(project_imports())
    assert not cycles, "import cycles between project modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_engine_does_not_import_plugins():
    bad = [f"{i.where()} imports {i.target}" for i in project_imports()
           if _area(i.module) == "mango" and _area(i.target) != "mango" and not _known("engine", i, i.target)]
    assert not bad, "the engine must not import mango.generators / mango.targets: " + "; ".join(bad)


def test_generators_and_targets_do_not_import_each_other():
    bad = [f"{i.where()} imports {i.target}" for i in project_imports()
           if _area(i.module) != "mango" and _area(i.target) not in ("mango", _area(i.module))
           and not _known("plugins", i, i.target)]
    assert not bad, "generators and targets must not import each other: " + "; ".join(bad)


def test_no_private_cross_module_imports():
    bad = []
    for i in project_imports():
        if i.target == i.module:
            continue
        for n in i.names:
            if n.startswith("_") and not n.startswith("__") and not _known("private", i, f"{i.target}.{n}"):
                bad.append(f"{i.where()} imports {i.target}.{n}")
    assert not bad, "private names imported from another module: " + "; ".join(bad)


def test_known_offenders_are_current():
    """Every exemption still matches an import (a stale one must be deleted, not kept)."""
    seen = set()
    for i in project_imports():
        seen.add(("cycle", i.module, i.target))
        seen.update(("private", i.module, f"{i.target}.{n}") for n in i.names)
        seen.add(("engine", i.module, i.target))
        seen.add(("plugins", i.module, i.target))
    stale = sorted(KNOWN_OFFENDERS - seen)
    assert not stale, f"remove these fixed offenders from KNOWN_OFFENDERS: {stale}"


@pytest.mark.parametrize("source,expect", [
    ("from .b import _x\n", "private"),
    ("def f():\n    from . import b\n", "cycle"),
])
def test_checker_catches_violations(tmp_path, monkeypatch, source, expect):
    """A fake package with a private import / a local-import cycle is caught (the test can fail)."""
    pkg = tmp_path / "mango"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(source)
    (pkg / "b.py").write_text("from . import a\n_x = 1\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    imps = project_imports()
    if expect == "private":
        assert any("_x" in i.names for i in imps)
    else:
        assert find_cycles(imps) == [["mango.a", "mango.b"]]
