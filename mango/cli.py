"""The ``mango`` command line: prints for people, writes files for programs.

Subcommands: ``run`` (flags or a TOML config), ``demo``, ``optimizers``,
``generators``, ``targets``, ``problems``, ``layers``. Others (``compare``,
``report``, ``scan``, ``rig-sim``) are added by their modules through
:data:`EXTRA_COMMANDS`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from . import registry
from .errors import MangoError

__all__ = ["main", "parse_kv"]


def parse_kv(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict, values parsed as TOML/JSON literals when possible (else strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise MangoError(f"{what} {item!r} must look like key=value")
        key, val = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            low = val.strip().lower()
            out[key.strip()] = {"true": True, "false": False}.get(low, val)
    return out


class _Progress:
    """tqdm progress bar over queries, showing the best value."""

    def __init__(self, budget: int, desc: str = "queries") -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=budget, desc=desc, unit="q", dynamic_ncols=True, file=sys.stderr)
        self.last = 0

    def __call__(self, ev: Any) -> None:
        self.bar.update(ev.n_queries - self.last)
        self.last = ev.n_queries
        self.bar.set_postfix(best=f"{ev.best_value:.4g}", refresh=False)

    def close(self) -> None:
        self.bar.close()


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from .config import load_toml

    cfg: dict[str, Any] = load_toml(args.config) if args.config else {}
    for key in ("budget", "seed", "batch_size", "device"):
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    cfg.setdefault("optimizer", {"name": "protes"})
    for table, flag_name, params in (("generator", "gen", args.gen_param),
                                      ("target", "target", args.target_param),
                                      ("problem", "problem", args.problem_param),
                                      ("optimizer", "opt", args.opt_param)):
        name = getattr(args, table)
        extra = parse_kv(params, f"--{flag_name}-param")
        if name is not None:
            cfg[table] = {"name": name, **extra}
        elif extra:
            if table not in cfg:
                raise MangoError(f"--{flag_name}-param given without a {table} (--{table} or a config table)")
            cfg[table] = {**cfg[table], **extra} if isinstance(cfg[table], dict) else {"name": cfg[table], **extra}
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from .config import build_objective, run_config, validate_config

    cfg = validate_config(_config_from_args(args))
    out = Path(args.out) if args.out else None
    objective = build_objective(cfg)
    bar = _Progress(cfg["budget"]) if not args.quiet else None
    try:
        res = run_config(cfg, out, callbacks=[bar] if bar else [], objective=objective)
    finally:
        if bar:
            bar.close()
    _print_summary(cfg, res, out)
    return 0


def _print_summary(cfg: dict[str, Any], res: Any, out: Path | None) -> None:
    what = cfg.get("problem", {}).get("name") if "problem" in cfg else \
        f"{cfg['generator']['name']} -> {cfg['target']['name']}"
    rows = [("objective", what), ("optimizer", cfg["optimizer"]["name"]), ("seed", cfg["seed"]),
            ("queries", res.n_queries), ("best value", f"{res.best_value:.6g}"),
            ("seconds", f"{res.seconds:.2f} (optimizer {res.optimizer_seconds:.2f})")]
    if out is not None:
        rows.append(("run folder", str(out)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


def cmd_list(kind: str) -> int:
    from .registry import describe_params

    for e in registry.entries(kind):
        factory = e.load()
        desc = getattr(factory, "description", "") or e.description
        print(f"{e.name}\n    {desc}")
        params = {k: v for k, v in describe_params(factory).items() if k not in ("space", "seed", "budget")}
        if params:
            print("    parameters: " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    target = registry.create("target", args.model, parse_kv(args.target_param, "--target-param"))
    layers = getattr(target, "layers", None)
    if not callable(layers):
        raise MangoError(f"target {args.model!r} cannot list its layers (it has no layers() method)")
    rows = list(layers())
    width = max(len(str(n)) for n, _ in rows) if rows else 0
    for name, shape in rows:
        print(f"{name:<{width}}  {tuple(shape)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), budget=args.budget, seed=args.seed, quiet=args.quiet)
    return 0


#: subcommands registered by other engine modules: name -> (module, help)
EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "rig-sim": ("mango.rig.simulator", "run a simulated recording rig"),
    "rig-run": ("mango.rig.run", "closed loop with a live (or simulated) recording rig"),
    "compare": ("mango.compare", "run a grid of objectives x optimizers x seeds (local processes or Ray)"),
    "report": ("mango.report", "write the Markdown/HTML report of a compare or scan folder"),
    "scan": ("mango.scan", "maximize every unit of a layer, one run each"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mango", description="Maximize a neuron's activation without gradients.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run one maximization (flags or a TOML config)")
    r.add_argument("--config", help="TOML config file (flags override it)")
    r.add_argument("--problem", help="registered index-space problem (instead of generator + target)")
    r.add_argument("--generator", help="registered generator (see `mango generators`)")
    r.add_argument("--target", help="registered target (see `mango targets`)")
    r.add_argument("--optimizer", help="registered optimizer (see `mango optimizers`); default protes")
    r.add_argument("--budget", type=int, help="total queries")
    r.add_argument("--seed", type=int, help="seed (default 0)")
    r.add_argument("--batch-size", type=int, help="queries per ask")
    r.add_argument("--device", help="torch device, e.g. cpu or cuda")
    for name in ("gen", "target", "problem", "opt"):
        r.add_argument(f"--{name}-param", action="append", metavar="KEY=VALUE", help=f"{name} parameter")
    r.add_argument("--out", help="run folder (journal, result.json, history.npz); re-running resumes it")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="maximize units of the embedded default models")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--budget", type=int, default=1000)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    for kind in ("optimizer", "generator", "target", "problem"):
        s = sub.add_parser(kind + "s", help=f"list registered {kind}s and their parameters")
        s.set_defaults(func=lambda a, k=kind: cmd_list(k))

    lay = sub.add_parser("layers", help="list a target model's layers with output shapes")
    lay.add_argument("model", help="registered target name, e.g. snn-digits")
    lay.add_argument("--target-param", action="append", metavar="KEY=VALUE")
    lay.set_defaults(func=cmd_layers)

    import importlib

    for name, (module, help_text) in EXTRA_COMMANDS.items():
        s = sub.add_parser(name, help=help_text)
        importlib.import_module(module).add_arguments(s)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except MangoError as exc:
        print(f"mango {args.cmd}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
