"""The ``mango`` command line: prints for people, writes files for programs.

Subcommands: ``run`` (flags or a TOML config), ``demo``, ``optimizers``,
``generators``, ``targets``, ``problems``, ``layers``. Others (``compare``,
``report``, ``scan``, ``rig-sim``) are added by their modules through
:func:`extra_commands`. Shared helpers live in :mod:`mango.clitools`.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from . import compare, registry, report, scan
from .clitools import BarOnOpen, check_out_dir, merge_table, parse_kv, print_rows
from .config import RunConfig, TargetSpec, build_objective, create_component, load_run_config, run_config
from .demo import run_demo
from . import watch
from .errors import ConfigError, MangoError
from .interrupt import SigtermAsInterrupt, Standing, Terminated, say_stopped
from .loop import build_optimizer
from .optimizers import DEFAULT_OPTIMIZER
from .registry import describe_params
from .rig import run as rig_run
from .rig import simulator
from .watch import add_watch_option, serve_option

__all__ = ["main", "build_parser", "parse_kv"]


def _config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run config of ``mango run``: the TOML file (if any) with the flags laid over it. Without a
    config file and without a generator, target or problem, ``--out DIR`` of a recorded run takes the
    config from ``DIR/run.json``: ``mango run --out DIR`` resumes (or shows) the run there."""
    recorded = Path(args.out or "", "run.json")
    if not args.config and args.out and not (args.generator or args.target or args.problem):
        if not recorded.is_file():
            raise ConfigError(f"{recorded} not found: `mango run --out DIR` alone resumes the run recorded in DIR; "
                              "to start one, give --generator and --target (or --problem), or --config")
        args.config = str(recorded)
    cfg: dict[str, Any] = load_run_config(args.config) if args.config else {}
    for key in ("budget", "seed", "batch_size", "device"):
        val = getattr(args, key)
        if val is not None:
            cfg[key] = val
    cfg.setdefault("optimizer", {"name": DEFAULT_OPTIMIZER})
    for table, flag, params in (("generator", "gen", args.gen_param), ("target", "target", args.target_param),
                                ("problem", "problem", args.problem_param), ("optimizer", "opt", args.opt_param)):
        merge_table(cfg, table, getattr(args, table), params, flag)
    return cfg


def _interrupted(standing: Standing, budget: int, out: Path | None, argv: list[str]) -> int:
    """Print where an interrupted ``mango run`` stands and how to resume it; the exit code 130."""
    say_stopped("mango run", standing.n_queries, budget, standing.best_value, None if out is None else str(out),
                "resume with: " + shlex.join(["mango", *argv]),
                "nothing was kept (no --out); add --out FOLDER to make a run resumable")
    return 130


def cmd_run(args: argparse.Namespace) -> int:
    """``mango run``: validate the config once, run it, print the summary.

    Ctrl-C prints the queries done, the best value so far, the run folder and the
    command that resumes the run, and returns 130.
    """
    raw = _config_from_args(args)
    try:
        cfg = RunConfig.from_dict(raw)
    except ConfigError as exc:
        if args.config:     # name the file the bad value came from (or that lacks one)
            raise ConfigError(f"{args.config}: {exc}") from None
        raise
    if args.out is not None and not str(args.out).strip():   # --out "" ran without a folder, silently
        raise ConfigError("--out '' is empty: give a folder, or leave --out out to keep nothing on disk")
    out = check_out_dir(args.out) if args.out else None
    if out is None and args.watch is not None:
        raise ConfigError("--watch needs --out: the live view reads the run folder")
    objective = build_objective(cfg)
    # the optimizer's parameter values are checked by its constructor: build it here, so a bad value
    # ends in its one-line error before a progress bar (or a live view) starts
    optimizer = build_optimizer(cfg.optimizer.name, objective.space, seed=cfg.seed, batch_size=cfg.batch_size,
                                budget=cfg.budget, params=dict(cfg.optimizer.params))
    opened = BarOnOpen(cfg.budget, bar=not args.quiet,      # a refused run draws no bar and serves no view
                       start=None if out is None else (lambda done, finished: serve_option(args.watch, out)))
    standing = Standing()
    try:
        res = run_config(cfg, out, callbacks=[standing, opened], objective=objective, optimizer=optimizer,
                         on_open=opened.on_open)
    except KeyboardInterrupt:
        opened.close()
        return _interrupted(standing, cfg.budget, out, getattr(args, "argv", sys.argv[1:]))
    finally:
        opened.close()
    if opened.finished:      # as mango.maximize says it: the summary is the stored run's, nothing was evaluated
        print(f"mango run: {out} holds a finished run of these settings: its stored result (nothing was "
              "evaluated; use another --out to search again)", file=sys.stderr, flush=True)
    print_rows(report.run_summary_rows(res, out))
    return 0


def cmd_list(kind: str) -> int:
    """``mango optimizers`` (generators, targets, problems): names, descriptions, parameters."""
    for e in registry.entries(kind):
        factory = e.load()
        desc = getattr(factory, "description", "") or e.description
        print(f"{e.name}\n    {desc}")
        params = {k: v for k, v in describe_params(factory).items() if k not in ("space", "seed", "budget")}
        if params:
            print("    parameters: " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    """``mango layers MODEL``: the target's layers with their output shapes (parameters checked as in ``run``)."""
    spec = TargetSpec(args.model, parse_kv(args.target_param, "--target-param"))
    spec.check_params()
    target = create_component(spec)
    layers = getattr(target, "layers", None)
    if not callable(layers):
        raise MangoError(f"target {args.model!r} cannot list its layers (it has no layers() method)")
    rows = list(layers())
    width = max(len(str(n)) for n, _ in rows) if rows else 0
    for name, shape in rows:
        print(f"{name:<{width}}  {tuple(shape)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``mango demo``."""
    run_demo(Path(args.out), budget=args.budget, seed=args.seed, quiet=args.quiet)
    return 0


def extra_commands() -> dict[str, tuple[Any, str]]:
    """Subcommands defined by other engine modules: name -> (module with ``add_arguments``, help).

    Those modules import only :mod:`mango.clitools` for their command-line helpers,
    never this module.
    """
    return {
        "rig-sim": (simulator, "run a simulated recording rig"),
        "rig-run": (rig_run, "closed loop with a live (or simulated) recording rig"),
        "compare": (compare, "run a grid of objectives x optimizers x seeds (local processes or Ray)"),
        "report": (report, "write the Markdown/HTML report of a compare or scan folder"),
        "scan": (scan, "maximize every unit of a layer, one run each"),
        "watch": (watch, "live web page of a run, rig-run, compare or scan folder (read-only)"),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mango", description="Maximize a neuron's activation without gradients.")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run one maximization (flags or a TOML config)")
    r.add_argument("--config", help="TOML config file, or a recorded run's run.json / result.json "
                                    "(flags override it)")
    r.add_argument("--problem", help="registered index-space problem (instead of generator + target)")
    r.add_argument("--generator", help="registered generator (see `mango generators`)")
    r.add_argument("--target", help="registered target (see `mango targets`)")
    r.add_argument("--optimizer", help=f"registered optimizer (see `mango optimizers`); default {DEFAULT_OPTIMIZER}")
    r.add_argument("--budget", type=int, help="total queries")
    r.add_argument("--seed", type=int, help="seed (default 0)")
    r.add_argument("--batch-size", type=int, help="queries per ask (the default layout-elite's layout phase asks CMA-ES generations of 20)")
    r.add_argument("--device", help="torch device, e.g. cpu or cuda")
    for name in ("gen", "target", "problem", "opt"):
        r.add_argument(f"--{name}-param", action="append", metavar="KEY=VALUE", help=f"{name} parameter")
    r.add_argument("--out", help="run folder (journal, result.json, history.npz); re-running resumes it, and "
                                 "`mango run --out DIR` alone takes the config recorded there")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_watch_option(r)
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

    for name, (module, help_text) in extra_commands().items():
        s = sub.add_parser(name, help=help_text)
        module.add_arguments(s)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    0: done. 2: a user error -- a bad flag (argparse), or a :class:`~mango.errors.MangoError`
    (:class:`~mango.errors.ConfigError`, :class:`~mango.errors.EvaluationError`, ...) printed as
    one line ``mango CMD: error: ...`` naming the value and the valid choices, no traceback.
    130: interrupted (Ctrl-C). 143: terminated (SIGTERM, handled as a Ctrl-C is: a run stops with its
    journal complete and its folder marked interrupted, a compare/scan grid stops its workers).
    Any other exception is a bug and keeps its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # a bad flag: argparse prints usage + one line and exits 2
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        with SigtermAsInterrupt() as term:
            code = int(args.func(args) or 0)
        return 143 if term.seen else code   # a command that reported the stop itself, or ended on it (watch)
    except MangoError as exc:
        print(f"mango {args.cmd}: error: {exc or type(exc).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        hint = ""
        if args.cmd == "rig-run" and getattr(args, "out", None):
            hint = f"; rerun the same command to resume from {args.out} (what the rig answered is kept)"
        elif args.cmd in ("compare", "scan"):
            hint = ("; rerun the same command to go on: finished runs are skipped and interrupted ones resume "
                    "from their journals")
        print(f"mango {args.cmd}: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}{hint}",
              file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # stdout closed early (``mango layers ... | head``): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
