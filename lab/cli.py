"""``python -m lab``: a thin command line over the lab's core. Only ``main`` prints and exits."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lab import arguments, process, scenarios
from lab.arguments import OneLineParser, add_debugger, count, pid, positive
from lab.debugger_registry import DEBUGGERS
from lab.errors import BadInput, OutputNotWritable
from lab.options import INSPECT_WINDOW_S, InspectOptions, RunOptions
from lab.parsers.kinds import KINDS
from lab.progress import Progress, shown
from lab.verdicts import GUARD_STATUS, RUN_MISMATCH_STATUS, WATCH_EXIT_STATUS, Verdict

WATCH_STATUSES = ", ".join(f"{status} {verdict.value}" for verdict, status in
                           WATCH_EXIT_STATUS.items() if verdict is not Verdict.INTERRUPTED)
INSPECT_STATUSES = (f"{WATCH_STATUSES} (as `watch`); 16 no such process, 17 a zombie, 18 the lab "
                    "itself, 6 another user's process the lab may not trace")
RUN_STATUSES = f"0 the observed verdict is the expected one, {RUN_MISMATCH_STATUS} it is not"
EPILOG = (f"`watch`: {WATCH_STATUSES}. `run`: {RUN_STATUSES}. `guard`: {GUARD_STATUS} a risky "
          "fork was seen, else as `watch`. `inspect PID`: "
          f"{INSPECT_STATUSES}. Every command: {arguments.LAB_ERROR_STATUSES}. "
          "`COMMAND --help` lists each command's own.")


def _common_options() -> dict[str, argparse.ArgumentParser]:
    """The options several subcommands share, declared once (parents=[...], as pystack).
    ``--debugger`` is not among them: each subcommand declares its own default."""
    doc = OneLineParser(add_help=False)
    doc.add_argument("--json", action="store_true",
                     help="print the document (evidence, tally, results) on stdout")
    target = OneLineParser(add_help=False)
    arguments.add_timeout(target, "seconds before an unfinished run is a hang (default: the "
                          "scenario's own; 60 for watch)")
    arguments.add_out(target)
    observe = OneLineParser(add_help=False)
    arguments.add_quiet(observe)
    observe.add_argument("--debugger-timeout", type=positive, metavar="S",
                         help="seconds the whole debugger capture may take (default 120)")
    observe.add_argument("--gcore", action="store_true",
                         help="also write a core file of the culprit with gcore, when small")
    observe.add_argument("--gcore-limit", type=positive, metavar="MB", default=1024.0,
                         help="largest core --gcore writes, estimated first (default 1024)")
    return {"doc": doc, "target": target, "observe": observe}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=arguments.prog_name("python -m lab"), description="Reproduce, "
                           "catch and explain fork/thread crashes.", epilog=EPILOG)
    parser.add_argument("--version", action="version", version=arguments.version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    common = _common_options()
    running = [common["doc"], common["target"], common["observe"]]

    run = sub.add_parser("run", parents=running,
                         help="run a scenario and judge it against its expected verdict",
                         epilog=arguments.exit_statuses(RUN_STATUSES))
    run.add_argument("scenario")
    add_debugger(run, "auto", "the debugger attached to the culprit: auto is the first "
                  "installed of " + ", ".join(DEBUGGERS))
    run.add_argument("--launcher", help="how the child starts (default: fork, or the "
                     "scenario's first launcher); `lab list` shows them")
    run.add_argument("--strace", action="store_true",
                     help="run under strace -f and keep the blocked process's last syscalls")
    run.add_argument("--trials", type=count, help="run N independent trials; print the tally")
    run.add_argument("--python", help="run the scenario in this interpreter (e.g. python3.12, "
                     "to see CPython's fork DeprecationWarning); default: the lab's own")
    run.add_argument("--pool", help="for a catalog entry with worker pools (`lab list` names "
                     "them): the pool (prefork, solo, threads, gevent, eventlet)")
    run.add_argument("--fix", help="with --pool: none, worker-process-init or lazy")

    watch = sub.add_parser("watch", parents=running,
                           help="run any command and judge every descendant",
                           epilog=arguments.exit_statuses(WATCH_STATUSES))
    add_debugger(watch, "auto", "the debugger attached to the culprit: auto is the first "
                  "installed of " + ", ".join(DEBUGGERS))
    watch.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    guard = sub.add_parser("guard", parents=running,
                           help="run any command with the fork guard: every fork made while "
                           "another thread holds a lock, or a native library's threads are "
                           "live, is named as it happens (--strict: stopped)",
                           epilog=arguments.exit_statuses(
                               f"{GUARD_STATUS} a risky fork was seen (stopped or not); else "
                               f"as `watch`: {WATCH_STATUSES}"))
    guard.add_argument("--strict", action="store_true", help="a risky fork raises "
                       "ForkSafetyError in the program instead of happening")
    add_debugger(guard, "auto", "the debugger attached to the culprit, should the program "
                 "deadlock all the same")
    guard.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")

    parse = sub.add_parser("parse", parents=[common["doc"]],
                           help="read what you already have (a GDB or LLDB session, a macOS "
                           "crash report, a py-spy dump) into an evidence document",
                           epilog=arguments.exit_statuses("0", "2 bad input (unreadable, empty, "
                                                          "binary, another kind, truncated)"))
    parse.add_argument("debugger", metavar="KIND",
                       choices=KINDS,
                       help="auto (detect it), gdb, lldb, crash (macOS .crash/.ips) or py-spy")
    parse.add_argument("file")
    parse.add_argument("--out", metavar="DIR", help="also write the document as "
                       "DIR/evidence.json (the text then points to it)")

    sub.add_parser("list", parents=[common["doc"]], help="list the scenarios",
                   epilog=arguments.exit_statuses("0", "2 bad input"))

    mat = sub.add_parser("matrix", parents=[common["doc"], common["target"]],
                         help="every scenario × launcher, N trials each: "
                         "results/<platform>.json, docs/RESULTS.md, docs/matrix.png",
                         epilog=arguments.exit_statuses(
                             f"0 every cell measured as expected, {RUN_MISMATCH_STATUS} a cell "
                             "was not (or stopped on an error)"))
    add_debugger(mat, "none", "the debugger attached to each trial's culprit")
    mat.add_argument("--trials", type=count, default=5, help="trials per cell (default 5)")
    mat.add_argument("--only", help="run only these cells: SCENARIO/LAUNCHER patterns, "
                     "comma-separated (e.g. 'SCENARIO/*,*/mp-spawn'; `lab list` names them)")
    mat.add_argument("--python", action="append", metavar="PYTHON",
                     help="run the cells in this interpreter (a path, a command or a version: "
                     "3.12), each in its own environment under --env-dir; repeatable or "
                     "comma-separated; one results/<platform>-pyX.Y.json each")
    mat.add_argument("--env-dir", default=".lab-envs",
                     help="where the interpreters' environments are created and cached")
    merge = mat.add_subparsers(dest="matrix_command", parser_class=OneLineParser).add_parser(
        "merge", parents=[common["doc"]], help="combine results/*.json of several platforms "
        "and render docs/RESULTS.md and docs/matrix.png")
    merge.add_argument("files", nargs="+", metavar="RESULTS.json")
    mat.add_argument("--results-dir", default="results")
    for each, default in ((mat, None), (merge, argparse.SUPPRESS)):
        # SUPPRESS: `matrix --docs-dir X merge` keeps X instead of merge's own default
        each.add_argument("--docs-dir", default=default or "docs")
        each.add_argument("--recorded", default=default, help="a recorded LLDB transcript "
                          "shown as the macOS cell ('none': no recorded cell)")

    insp = sub.add_parser("inspect", parents=[common["doc"]],
                          help="diagnose a process that is already hung, without relaunching "
                          "it: never kills or signals it, pauses it only while a debugger is "
                          "attached", epilog=arguments.exit_statuses(INSPECT_STATUSES))
    insp.add_argument("pid", type=pid, metavar="PID")
    insp.add_argument("--tree", action=argparse.BooleanOptionalAction, default=True,
                      help="judge its descendants too (default: --tree)")
    insp.add_argument("--parent", action="store_true", help="also capture the parent in the "
                      "debugger (automatic for its threads and Python stacks when PID was "
                      "forked from it without exec, as a pool's worker is)")
    add_debugger(insp, "auto", "native stacks of the culprit; none: no ptrace at all, the "
                  "processes are never paused")
    arguments.add_out(insp)
    insp.add_argument("--window", type=positive, default=INSPECT_WINDOW_S, metavar="S",
                      help="seconds of /proc samples to judge from (default "
                      f"{INSPECT_WINDOW_S:g})")
    insp.add_argument("--debugger-timeout", type=positive, metavar="S",
                      help="seconds the whole debugger capture may take (default 120)")
    insp.add_argument("--quiet", action="store_true", help="no progress lines")

    sub.add_parser("cleanup", parents=[common["doc"]],
                   help="finish the runs of a lab that was killed (kill -9): stop what is left, "
                   "remove temp files, mark the evidence interrupted (every command does it too)",
                   epilog=arguments.exit_statuses("0", "2 bad input"))

    rep = sub.add_parser("report", help="write RUN_DIR/report.md, a bug report of one run",
                         epilog=arguments.exit_statuses("0", "2 bad input (no such run "
                                                        "directory, no evidence in it)"))
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument("--results-dir", default="results",
                     help="where the matrix results are (for the fix that worked)")

    bench = sub.add_parser("bench", help="measure time to verdict, cost of evidence and of the "
                           "fixes, scaling; write results/bench-<platform>.json, docs/BENCH.md",
                           epilog=arguments.exit_statuses("0"))
    bench.add_argument("--quick", action="store_true", help="a short run (minutes to seconds), "
                       "written as results/bench-<platform>-quick.json, results/BENCH-quick.md")
    bench.add_argument("--results", default="results", help="directory of the JSON")
    bench.add_argument("--docs", default="docs", help="directory of BENCH.md and bench.png")
    return parser


def _cmd_list(args) -> int:
    rows = [scenarios.get(name).row() for name in scenarios.names()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        launch = ", ".join(f"{k}: {v}" for k, v in row["expected"].items())
        flag = "" if row["runnable"] else f"  [cannot run here: {row['why_not']}]"
        if row["predicted"]:  # another OS, where the mechanism predicts another verdict
            flag += "  [predicted here: " + ", ".join(f"{k}: {v}" for k, v in
                                                      row["predicted"].items()) + "]"
        print(f"{row['name']:<28} {launch}{flag}\n    {row['summary']}")
    return 0


def _cmd_watch(args) -> int:
    from lab import target
    from lab.watch.watcher import watch

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise BadInput("no command given: python -m lab watch [OPTIONS] -- CMD [ARGS...]")
    evidence = watch(target.command(cmd), RunOptions.from_args(args),
                     Progress(enabled=not args.quiet))
    if args.json:
        sys.stdout.write(evidence.to_json())
    arguments.tell(evidence, args.quiet)
    return WATCH_EXIT_STATUS[Verdict(evidence.verdict)]


def _cmd_guard(args) -> int:
    from lab import target
    from lab.guard import MODE_VAR
    from lab.watch.watcher import watch

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise BadInput("no command given: python -m lab guard [--strict] [OPTIONS] -- CMD "
                       "[ARGS...]")
    guarded = dataclasses.replace(target.command(cmd),
                                  env={MODE_VAR: "strict" if args.strict else "warn"})
    evidence = watch(guarded, RunOptions.from_args(args), Progress(enabled=not args.quiet))
    if args.json:
        sys.stdout.write(evidence.to_json())
    arguments.tell(evidence, args.quiet)
    if evidence.risky_forks:
        stopped = sum(bool(fork.get("stopped")) for fork in evidence.risky_forks)
        if not args.quiet:
            sys.stderr.write(f"lab: guard: {len(evidence.risky_forks)} risky fork(s), "
                             f"{stopped} stopped; each in "
                             f"{shown(Path(evidence.evidence_dir) / 'evidence.json')} "
                             "(risky_forks)\n")
        return GUARD_STATUS
    return WATCH_EXIT_STATUS[Verdict(evidence.verdict)]


def _cmd_parse(args) -> int:
    from lab.parsers.document import MAX_FRAMES, MAX_THREADS, evidence_from_transcript

    evidence = evidence_from_transcript(args.debugger, Path(args.file))
    bounds = (evidence.parsed or {}).get("input") or {}
    if bounds.get("cut"):
        sys.stderr.write(f"lab: parse: read the first {bounds['bytes_read']:,} bytes of "
                         f"{args.file} ({bounds['bytes']:,}): the rest is not in the document\n")
    if bounds.get("threads_dropped") or bounds.get("frames_dropped"):
        sys.stderr.write(f"lab: parse: kept at most {MAX_THREADS} threads and {MAX_FRAMES} "
                         f"frames a thread: {bounds['threads_dropped']:,} thread(s) and "
                         f"{bounds['frames_dropped']:,} frame(s) dropped\n")
    written = None
    if args.out:
        from lab.rundir import RunDir

        folder = Path(args.out)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputNotWritable(f"cannot make {folder}: {exc.strerror or exc}") from None
        rundir = RunDir.existing(folder)
        written = rundir.write_evidence(evidence)
        if rundir.failed:
            raise OutputNotWritable(f"cannot write {folder}/{rundir.failed}")
    if args.json:
        sys.stdout.write(evidence.to_json())
    else:
        from lab.parsers.summary import parsed_summary

        sys.stdout.write(parsed_summary(evidence, Path(args.file).name,
                                        str(written) if written else None))
    return 0


def _cmd_run(args) -> int:
    from lab.runner import run_scenario

    options = RunOptions.from_args(args)
    launcher = scenarios.get(args.scenario).choose_launcher(args.launcher, args.pool, args.fix)
    if args.trials:
        from lab.trials import run_trials

        tally = run_trials(args.scenario, launcher, args.trials, options, quiet=args.quiet,
                           python=args.python)
        if args.json:
            sys.stdout.write(json.dumps(tally, indent=2) + "\n")
        else:
            sys.stderr.write(f"lab: {tally['scenario']} / {tally['launcher']}: expected "
                             f"{tally['expected']}, {tally['counts']}, rate {tally['rate']:.2f}\n")
        return 0 if tally["rate"] == 1.0 else RUN_MISMATCH_STATUS
    evidence = run_scenario(args.scenario, launcher, options, Progress(enabled=not args.quiet),
                            python=args.python)
    return arguments.run_status(evidence, args.json, args.quiet)


def _recorded(args) -> Path | None:
    from lab.matrix.recorded import DEFAULT_SOURCE

    if args.recorded is None:
        return DEFAULT_SOURCE  # shown when it exists; nothing is claimed when it does not
    if args.recorded.lower() == "none":
        return None
    if not Path(args.recorded).is_file():
        raise BadInput(f"--recorded: no such file: {args.recorded}")
    return Path(args.recorded)


def _cmd_matrix(args) -> int:
    from lab.matrix import merge as matrix_merge

    if args.matrix_command == "merge":
        skipped: list[str] = []
        docs = matrix_merge.load_all([Path(f) for f in args.files], skipped)
        for note in skipped:
            sys.stderr.write(f"lab: matrix merge: skipped: {note}\n")
        merged = matrix_merge.merge(docs, _recorded(args))
        md, png = matrix_merge.write_docs(merged, Path(args.docs_dir))
        if args.json:
            sys.stdout.write(json.dumps(merged, indent=2) + "\n")
        states = ", ".join(f"{p['id']} ({p['state']})" for p in merged["platforms"])
        sys.stderr.write(f"lab: matrix merge: {len(docs)} file(s); {states}; wrote {md} and "
                         f"{png}\n")
        return 0
    from lab import interpreters
    from lab.matrix.run import MatrixOptions, run_matrix

    recorded = _recorded(args)
    pythons = [p.strip() for given in args.python or [] for p in given.split(",") if p.strip()]
    for python in pythons:  # a typo fails now, not after the interpreters before it ran
        interpreters.resolve(python)
    options = MatrixOptions.from_args(args)
    docs = []
    for python in pythons or [None]:
        doc = run_matrix(dataclasses.replace(options, python=python))
        docs.append(doc)
    files = matrix_merge.platform_files(Path(args.results_dir))
    merged = matrix_merge.merge(matrix_merge.load_all(files, []), recorded)
    md, png = matrix_merge.write_docs(merged, Path(args.docs_dir))
    sys.stderr.write(f"lab: matrix: wrote {md} and {png} ({len(files)} platform file(s))\n")
    if args.json:
        sys.stdout.write(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2) + "\n")
    # the cells this run measured (a partial run keeps earlier ones: not its to report)
    bad = [r for doc in docs for r in doc["rows"] if r.get("ran") == doc["run"]["started"]
           and (r["status"] == "error" or (r["status"] == "run" and r["rate"] != 1.0))]
    for row in bad:
        sys.stderr.write(f"lab: matrix: {row['scenario']}/{row['launcher']}: expected "
                         f"{row['expected']}, observed {row['counts']}"
                         f"{' (' + row['why'] + ')' if row['why'] else ''}\n")
    return RUN_MISMATCH_STATUS if bad else 0


def _cleanup(quiet: bool) -> list:
    """Finish what killed labs left; one line on stderr per run (unless ``quiet``)."""
    from lab import runs

    done = runs.cleanup()
    for run in done if not quiet else []:
        sys.stderr.write(f"lab: cleanup: run {run.run_id} of a lab that is gone: stopped "
                         f"{len(run.stopped)} process(es), evidence marked interrupted "
                         f"({shown(run.evidence_dir)})\n")
    return done


def _cmd_cleanup(args) -> int:
    done = _cleanup(quiet=args.json)
    if args.json:
        sys.stdout.write(json.dumps([run.__dict__ for run in done], indent=2) + "\n")
    elif not done:
        sys.stderr.write("lab: cleanup: nothing left by a killed lab\n")
    return 0


def _cmd_report(args) -> int:
    from lab.report import write_report

    path = write_report(Path(args.run_dir), Path(args.results_dir))
    sys.stdout.write(f"{path}\n")
    return 0


def _cmd_inspect(args) -> int:
    from lab.inspector.run import inspect

    evidence = inspect(InspectOptions.from_args(args), Progress(enabled=not args.quiet))
    if args.json:
        sys.stdout.write(evidence.to_json())
    arguments.tell(evidence, args.quiet)
    return WATCH_EXIT_STATUS[Verdict(evidence.verdict)]


def _cmd_bench(args) -> int:
    from lab.bench.suite import run_bench

    paths = run_bench(args.quick, Path(args.results), Path(args.docs), Progress())
    sys.stdout.write(f"{paths.json}\n{paths.markdown}\n{paths.image}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    return arguments.main(lambda: build_parser().parse_args(argv), _dispatch)


def _dispatch(args) -> int:
    process.backend_name()  # a LAB_BACKEND that names no backend: one line, nothing started
    handler = {"run": _cmd_run, "watch": _cmd_watch, "guard": _cmd_guard, "list": _cmd_list,
               "parse": _cmd_parse,
               "matrix": _cmd_matrix, "report": _cmd_report, "bench": _cmd_bench,
               "cleanup": _cmd_cleanup, "inspect": _cmd_inspect}[args.command]
    if args.command in ("run", "watch", "guard", "matrix", "bench"):
        _cleanup(quiet=False)  # what a killed lab left must not linger, nor be adopted
    return handler(args)
