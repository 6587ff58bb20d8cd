"""``mango rig-run``: the noise-aware closed loop against a rig (or ``mango rig-sim``).

Rerunning the same command with the same ``--out`` resumes: logged responses are
replayed, never re-presented. Connection settings (address, folder, timeout,
retries, token) may change between runs; everything else must stay the same.

The run id written into file-drop manifests (and required in the rig's response
files) is kept in ``<out>/rig_run_id``: the same on resume, new for a new run folder
(even one at the same path after the old one was deleted), so leftover responses of
another run in a shared drop folder are never used.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from .. import registry
from ..clitools import check_out_dir, parse_kv, print_rows
from ..errors import ConfigError
from ..journal import atomic_write
from ..loop import check_budget
from ..optimizers import DEFAULT_OPTIMIZER
from . import PROTOCOLS, make_client
from ..watch import add_watch_option, serve_option
from .closedloop import RigPolicy, closed_loop, stimulus_images
from .zmq_transport import check_address

__all__ = ["add_arguments", "load_reference", "rig_run_id"]

log = logging.getLogger(__name__)


def load_reference(paths: list[str], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """PNG files -> ``uint8 [r, H, W, C]`` (each must match ``shape`` = (H, W, C) when given)."""
    import imageio.v3 as iio

    out = []
    for p in paths:
        try:
            img = np.asarray(iio.imread(p))
        except Exception as exc:
            raise ConfigError(f"reference image {p!r} unreadable: {exc}") from None
        if img.ndim == 2:
            img = img[..., None]
        if img.shape[-1] == 4:
            img = img[..., :3]
        if shape is not None and img.shape != tuple(shape):
            raise ConfigError(f"reference image {p!r} is {img.shape} (H, W, C); the generator makes {tuple(shape)}")
        out.append(img.astype(np.uint8))
    return np.stack(out)


def rig_run_id(out: str | os.PathLike) -> str:
    """The run id of run folder ``out``: read from ``out/rig_run_id``, or made (``<folder name>-<12 hex>``) and
    stored there (atomically) on the first call. Stable across resumes, unique per run folder."""
    out = Path(out)
    path = out / "rig_run_id"
    if path.exists():
        run = path.read_text().strip()
        if run:
            return run
        log.warning("%s is empty; making a new run id", path)
    out.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", out.resolve().name)[:64] or "run"
    run = f"{stem}-{uuid.uuid4().hex[:12]}"
    atomic_write(path, (run + "\n").encode())
    return run


def _parse_select(text: str | None) -> Any:
    if text is None:
        return None
    if text == "mean":
        return "mean"
    try:
        vals = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ConfigError(f"--channel {text!r}: valid choices: an int, a comma-separated list of ints, 'mean'") from None
    return vals[0] if len(vals) == 1 else vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``mango rig-run``."""
    p.add_argument("--protocol", choices=PROTOCOLS, default="zmq",
                   help="zmq (socket), filedrop (folder), lsl (Lab Streaming Layer), xdream (XDream's folder files)")
    p.add_argument("--address", default="tcp://127.0.0.1:5555", help="rig endpoint (zmq)")
    p.add_argument("--folder", help="shared folder (filedrop; xdream: the folder the rig script watches)")
    p.add_argument("--response-folder", default=None,
                   help="xdream: where the rig script writes block%%03d.mat (XDream's score_dir; default --folder)")
    p.add_argument("--shows", type=int, default=1,
                   help="xdream: times the rig script shows each BMP per XDream block (default 1)")
    p.add_argument("--stream-name", default="mango", help="LSL stream prefix (lsl): NAME-markers, NAME-images, "
                   "NAME-responses")
    p.add_argument("--token", default=os.environ.get("MANGO_RIG_TOKEN"), help="shared token (or $MANGO_RIG_TOKEN)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait per attempt")
    p.add_argument("--retries", type=int, default=5, help="resends before giving up")
    p.add_argument("--encoding", choices=("raw", "png"), default="raw", help="image encoding on the wire")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback rig address")
    p.add_argument("--generator", default="vqvae-digits", help="registered generator")
    p.add_argument("--gen-param", action="append", metavar="KEY=VALUE")
    p.add_argument("--optimizer", default=DEFAULT_OPTIMIZER, help=f"registered optimizer (default {DEFAULT_OPTIMIZER})")
    p.add_argument("--opt-param", action="append", metavar="KEY=VALUE")
    p.add_argument("--budget", type=int, default=1000, help="total presentations")
    p.add_argument("--batch-size", type=int, default=20, help="candidates per block")
    p.add_argument("--repeats", type=int, default=2, help="presentations per image per block")
    p.add_argument("--retest-every", type=int, default=3, help="re-show the best every N blocks (0: never)")
    p.add_argument("--confirm-top", type=int, default=5,
                   help="codes re-shown in the final confirmation block (0: none)")
    p.add_argument("--confirm-repeats", type=int, default=None,
                   help="presentations per code in the confirmation block (default 2 x repeats)")
    p.add_argument("--holdout-repeats", type=int, default=10,
                   help="presentations of the chosen image in the final hold-out block; the reported "
                        "response comes from these alone (unbiased); 0: no hold-out block")
    p.add_argument("--reference", action="append", metavar="PNG", help="reference image shown every block")
    p.add_argument("--channel", default=None,
                   help="channel: an int, a list '0,2' (mean), or 'mean'; required for a rig that records several "
                        "(default: the one channel of a one-channel rig)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (journal); rerun the same command to resume")
    add_watch_option(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no per-block lines")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    if args.protocol == "zmq":  # before the run folder is made and the generator loads
        check_address(args.address, args.allow_remote)
    if args.protocol != "xdream" and (args.response_folder is not None or args.shows != 1):
        raise ConfigError(f"--response-folder and --shows are for --protocol xdream, not {args.protocol!r}")
    if isinstance(args.shows, bool) or args.shows < 1:
        raise ConfigError(f"--shows (showings of each BMP per XDream block) must be >= 1, got {args.shows!r}")
    check_out_dir(args.out)
    gparams = parse_kv(args.gen_param, "--gen-param")
    oparams = parse_kv(args.opt_param, "--opt-param")
    gen = registry.create("generator", args.generator, gparams)
    select = _parse_select(args.channel)
    ref = None
    if args.reference:
        shape = stimulus_images(gen, gen.space.sample(np.random.default_rng(0), 1)).shape[1:]
        ref = load_reference(args.reference, shape)
    RigPolicy(None, gen, repeats=args.repeats, retest_every=args.retest_every, confirm_top=args.confirm_top,
              confirm_repeats=args.confirm_repeats, reference=ref, holdout_repeats=args.holdout_repeats
              ).check_fits(check_budget(args.budget, "presentations"), args.batch_size)  # before the run id is made
    cfg = {"generator": {"name": args.generator, **gparams}, "optimizer": {"name": args.optimizer, **oparams},
           "batch_size": args.batch_size, "reference_files": [Path(r).name for r in args.reference or []]}
    serve_option(args.watch, args.out)
    client = make_client(args.protocol, address=args.address, folder=args.folder, token=args.token,
                         timeout=args.timeout, retries=args.retries, encoding=args.encoding,
                         run=rig_run_id(args.out), allow_remote=args.allow_remote, stream_name=args.stream_name,
                         response_folder=args.response_folder, shows=args.shows)

    def progress(ev: Any) -> None:
        if not args.quiet:
            ref_txt = f"  refs {np.round(ev.reference_means, 2).tolist()}" if len(ev.reference_means) else ""
            print(f"block {ev.block:4d}  {ev.presentations:6d}/{ev.budget} presentations  "
                  f"best mean {ev.best_mean:8.3f} (n={ev.best_n}){' [log]' if ev.replayed else ''}{ref_txt}",
                  flush=True)

    try:
        res = closed_loop(client, gen, args.optimizer, args.budget, args.seed, batch_size=args.batch_size,
                          params=oparams, repeats=args.repeats, retest_every=args.retest_every, reference=ref,
                          confirm_top=args.confirm_top, confirm_repeats=args.confirm_repeats,
                          holdout_repeats=args.holdout_repeats,
                          select=select, run_dir=args.out, config=cfg, callbacks=[progress])
    finally:
        client.close()
    lo, hi = res.holdout_ci95
    ci = f"; 95% t-interval {lo:.4g}..{hi:.4g}" if np.isfinite(lo) else ""
    est = (f"{res.holdout_mean:.4g} +- {res.holdout_sem:.2g} (SE{ci}; n={res.holdout_n}, hold-out presentations "
           "only)" if res.holdout_n else "none (no hold-out block ran)")
    rows = [("response (unbiased)", est), ("selection mean", f"{res.best_mean:.4g} (n={res.best_n}, biased upwards)"),
            ("best code", " ".join(map(str, res.best_code.tolist()))),
            ("presentations", f"{res.presentations} in {res.blocks} blocks ({res.replayed_blocks} from the log)"),
            ("ignored messages", str(len(res.ignored))), ("run folder", str(args.out))]
    if res.reference_means.size:
        rows.append(("reference drift", f"first {np.round(res.reference_means[0], 2).tolist()} "
                                        f"last {np.round(res.reference_means[-1], 2).tolist()}"))
    print_rows(rows)
    return 0
