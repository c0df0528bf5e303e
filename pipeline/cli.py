"""Command line: ``tomomech init|run|segment|describe|mesh|solve|report|view|study|materials``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tomomech.errors import TomomechError

log = logging.getLogger("tomomech")


def _setup_logging(verbose: int, quiet: int) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    try:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False)
        fmt = "%(message)s"
    except ImportError:  # pragma: no cover
        handler = logging.StreamHandler()
        fmt = "%(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    level = max(logging.DEBUG, min(level, logging.CRITICAL))
    handler.setLevel(level)  # records that libraries' own loggers let through stop here too
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # dask's scheduler and workers log every connection at INFO: shown with -vv only
    logging.getLogger("distributed").setLevel(level if verbose >= 2 else max(level, logging.WARNING))


def _progress_bar(quiet: bool):
    """A (callback, context) pair showing a rich progress bar per stage."""
    if quiet:
        import contextlib

        return (lambda *a: None), contextlib.nullcontext()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn(), transient=False)
    tasks = {}

    def cb(stage, done, total):
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return cb, bar


def _config(args):
    from pipeline.config import config_from_dict, load_config

    target = Path(args.target)
    overrides: dict = {}
    if getattr(args, "voxel_size_um", None) is not None:
        overrides.setdefault("input", {})["voxel_size_um"] = args.voxel_size_um
    if getattr(args, "output", None):
        overrides.setdefault("output", {})["dir"] = str(Path(args.output).resolve())
    if getattr(args, "uncertainty", None) is not None:
        overrides.setdefault("uncertainty", {})["samples"] = args.uncertainty
    if target.suffix.lower() == ".toml":
        return load_config(target, overrides)
    if target.is_dir() and (target / "config.toml").exists():
        # a results folder: re-run its stages from its resolved config
        overrides.setdefault("output", {}).setdefault("dir", str(target.resolve()))
        return load_config(target / "config.toml", overrides)
    data = {"input": {"path": str(target.resolve())}}
    data["output"] = {"dir": str(Path(args.output or target.with_suffix("").name + "_results").resolve())}
    for k, v in overrides.items():
        data.setdefault(k, {}).update(v)
    return config_from_dict(data, Path.cwd())


def cmd_run(args, stages) -> int:
    from pipeline.run import run

    cfg = _config(args)
    cb, bar = _progress_bar(args.quiet > 0)
    with bar:
        out = run(cfg, stages=stages, progress=cb, force=args.force)
    if stages == ("segment", "describe"):
        from pipeline.microstructure_report import write_page

        out = write_page(out)
    log.info("results in %s", out)
    print(out)
    return 0


def cmd_study(args) -> int:
    from pipeline.study import load_study, run_study

    study = load_study(args.study_file)
    out = Path(args.output or Path(args.study_file).with_suffix("").name + "_study")
    if args.quiet:
        res = run_study(study, out, workers=args.workers, scheduler=args.scheduler)
    else:
        from rich.progress import Progress

        with Progress() as bar:
            task = bar.add_task("cases", total=len(study.cases))

            def cb(p):
                bar.update(task, completed=p["done"] + p["failed"],
                           description=f"cases: {p['done']} done, {p['running']} running, {p['failed']} failed, "
                                       f"{p['eta_s']:.0f} s left")

            res = run_study(study, out, workers=args.workers, scheduler=args.scheduler, progress=cb)
    for case, err in res["failed"].items():
        log.error("case %s failed: %s", case, err)
    print(out / "study.csv")
    return 0 if not res["failed"] else 1


def cmd_view(args) -> int:
    try:
        from pipeline.napari import view
    except ImportError as exc:  # pragma: no cover
        raise TomomechError(f"napari is not installed ({exc}): pip install 'tomomech[napari]'") from exc
    if args.screenshot:
        print(view.screenshot(args.target, args.screenshot, step=args.step))
        return 0
    import napari

    view.open_viewer(args.target, step=args.step)
    napari.run()
    return 0


def cmd_materials(args) -> int:
    from solvers.physics.materials import PLASTICITY_PRESETS, PRESETS

    print(f"{'name':10s} {'E_GPa':>8s} {'nu':>5s} {'D_m2_s':>9s} {'c_max':>8s}  volume change / source")
    for m in PRESETS.values():
        vc = ("table" if m.volume_change else f"Omega={m.omega_m3_mol:g}" if m.omega_m3_mol else "-")
        print(f"{m.name:10s} {m.E_GPa:8.3g} {m.nu:5.2f} {m.D_m2_s or float('nan'):9.2g} "
              f"{m.c_max_mol_m3 or float('nan'):8.0f}  {vc}; {m.source}")
    print("\nplastic laws (a material table's plasticity = \"<name>\"):")
    print(f"{'name':10s} {'yield_MPa':>9s} {'H_MPa':>7s} {'eta_s':>6s} {'m':>4s}  source")
    for name, law in PLASTICITY_PRESETS.items():
        print(f"{name:10s} {law.yield_MPa:9.3g} {law.hardening_MPa:7.3g} {law.viscosity_s:6.3g} "
              f"{law.rate_exponent:4.2g}  {law.source}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tomomech", description="Tomography of solid-state cathodes to "
                                "per-particle chemo-mechanical statistics.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less logging, no progress bars")
    sub = p.add_subparsers(dest="command", required=True)
    helps = {"run": "all stages", "segment": "stack -> phases.tif, particles.tif",
             "describe": "phases -> microstructure.json, microstructure.html (descriptors, tortuosity)",
             "mesh": "phases -> mesh.xdmf", "solve": "mesh -> fields, particles.csv, summary.json",
             "report": "tables -> report.html"}
    for name, h in helps.items():
        s = sub.add_parser(name, help=h)
        s.add_argument("target", help="CONFIG.toml, a TIFF stack or slice folder, or a results folder")
        s.add_argument("-o", "--output", help="results folder (overrides [output] dir)")
        s.add_argument("--voxel-size-um", type=float, help="voxel size in micrometres (overrides metadata)")
        s.add_argument("--force", action="store_true", help="ignore cached stages")
        if name == "run":
            s.add_argument("--uncertainty", type=int, metavar="N",
                           help="rerun under N seeded perturbations of the segmentation ([uncertainty] samples)")
    ini = sub.add_parser("init", help="write a commented starting config for a stack (voxel size, "
                         "thresholds with their histogram, a first crop)")
    ini.add_argument("stack", help="TIFF stack or slice folder")
    ini.add_argument("-o", "--output", help="config to write (default: STACK_NAME.toml here)")
    ini.add_argument("--force", action="store_true", help="overwrite an existing config")
    sub.add_parser("materials", help="list material presets")
    vw = sub.add_parser("view", help="open a results folder or a stack in napari")
    vw.add_argument("target", help="results folder, TIFF stack or slice folder")
    vw.add_argument("--screenshot", help="render headless to this PNG and exit")
    vw.add_argument("--step", type=int, help="step of particles.csv for the particle features (default: last)")
    st = sub.add_parser("study", help="many cases on dask: samples, crops, synthetic composites, sweeps")
    st.add_argument("study_file", help="STUDY.toml")
    st.add_argument("-o", "--output", help="study results folder (default: beside the study file)")
    st.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    st.add_argument("--scheduler", help="address of a running dask scheduler, to use many machines")
    return p


def main(argv=None) -> int:
    """Entry point; returns the exit code (2 for user errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    stages = {"run": ("segment", "describe", "mesh", "solve", "report"), "segment": ("segment",),
              "describe": ("segment", "describe"),
              "mesh": ("segment", "mesh"), "solve": ("segment", "solve"), "report": ("report",)}
    try:
        if args.command == "materials":
            return cmd_materials(args)
        if args.command == "init":
            from pipeline.init import init_config

            print(init_config(args.stack, args.output, force=args.force))
            return 0
        if args.command == "study":
            return cmd_study(args)
        if args.command == "view":
            return cmd_view(args)
        if args.command == "report":
            from pipeline.report import write_report

            target = Path(args.target)
            folder = target if target.is_dir() else Path(_config(args).output.dir)
            print(write_report(folder))
            return 0
        return cmd_run(args, stages[args.command])
    except TomomechError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
