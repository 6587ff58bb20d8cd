"""Lines per package and the longest functions of the project (for issue 11's before/after note).

    python experiments/code_stats.py [--top 10] [ROOT]

Counts non-blank lines (all lines in parentheses) of every ``*.py`` under ``mango/``
(engine, with ``mango/optimizers`` and ``mango/rig`` shown separately), ``generators/``,
``targets/``, ``experiments/`` and ``tests/``, and lists the longest functions and
methods (``end_lineno - lineno + 1``, decorators excluded) in the three installed packages.
"""
from __future__ import annotations

import argparse
import ast
from pathlib import Path

GROUPS = ("mango", "mango/optimizers", "mango/rig", "generators", "targets", "experiments", "tests")


def group_of(rel: Path) -> str:
    parts = rel.parts
    if parts[0] == "mango" and len(parts) > 2 and f"mango/{parts[1]}" in GROUPS:
        return f"mango/{parts[1]}"
    return parts[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", nargs="?", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--top", type=int, default=10)
    a = ap.parse_args(argv)
    root = Path(a.root)
    lines: dict[str, list[int]] = {g: [0, 0, 0] for g in GROUPS}
    funcs: list[tuple[int, str]] = []
    for top in ("mango", "generators", "targets", "experiments", "tests"):
        for path in sorted((root / top).rglob("*.py")):
            rel = path.relative_to(root)
            text = path.read_text()
            g = lines[group_of(rel)]
            g[0] += 1
            g[1] += sum(1 for ln in text.splitlines() if ln.strip())
            g[2] += len(text.splitlines())
            if top in ("mango", "generators", "targets"):
                for node in ast.walk(ast.parse(text)):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        funcs.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    print(f"{'package':<18} {'files':>5} {'lines':>7} {'(all)':>7}")
    for g, (n, nb, al) in lines.items():
        print(f"{g:<18} {n:>5} {nb:>7} {al:>7}")
    engine = [lines[g] for g in ("mango", "mango/optimizers", "mango/rig")]
    print(f"{'mango (all)':<18} {sum(e[0] for e in engine):>5} {sum(e[1] for e in engine):>7} "
          f"{sum(e[2] for e in engine):>7}")
    print(f"\n{a.top} longest functions (lines):")
    for n, where in sorted(funcs, reverse=True)[:a.top]:
        print(f"{n:>5}  {where}")


if __name__ == "__main__":
    main()
