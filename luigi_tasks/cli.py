"""How luigi_tasks behaves under luigi's command line (`luigi --module luigi_tasks`, bin/luigi-run).

Luigi imports this package while it parses the command line, before it sets up logging or contacts a
scheduler; `on_import` uses that moment to
- give the [retcode] keys no config file sets our exit codes (luigi alone exits 0 on failure),
- cache completeness checks that found a task done ([worker] cache_task_completion, unless a config file sets it),
- stop at once, in one line, when the central scheduler cannot be reached (luigi would retry for a
  minute and print ten tracebacks),
- put the time on every log line (luigi's default format has none),
- collect the run's events for the end-of-run table of months (luigi_tasks.summary),
- name an unknown task in one line with exit code 40, like any other bad parameter (luigi raises it
  before its own exit-code handling, as a traceback with exit code 1).
Under any runner, failures we explain (PipelineError) are logged in one line instead of a traceback, and
our modules' own loggers log through luigi's.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import multiprocessing
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import luigi.configuration
import luigi.interface
import luigi.retcodes
import luigi.task_register

from luigi_tasks import summary
from luigi_tasks.errors import PipelineError

LOGGING_CONF = Path(__file__).with_name("logging.cfg")
CONNECT_TIMEOUT = 5.0  # seconds to wait for the scheduler to accept a connection


class OneLineFailures(logging.Filter):
    """Luigi's records of a PipelineError as one line with our message, and no traceback:

    - "Worker ... failed Task" (the task's run() raised it): the message appended;
    - "Uncaught exception in luigi" (a bad parameter or setting while luigi builds the root task): the message;
    - "Will not run Task ... due to error in complete() method:" and its traceback as text (complete() or
      requires() raised it, perhaps in another process): the message instead of the traceback.
    Any other exception (a bug) keeps its traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, PipelineError):
            uncaught = record.msg == UNCAUGHT
            record.msg = "%s" if uncaught else f"{record.msg}: %s"
            record.args = (error,) if uncaught else (*(record.args or ()), error)
            record.exc_info = record.exc_text = None
        elif isinstance(record.msg, str) and not record.args:
            head, found, trace = record.msg.partition(" method:\n")
            message = _pipeline_error_message(trace) if found and head.startswith("Will not run ") else None
            if message is not None:
                record.msg = f"{head} method: %s"
                record.args = (message,)
        return True


UNCAUGHT = "Uncaught exception in luigi"  # luigi.retcodes.run_with_retcodes logs an error in building the task


def _pipeline_error_message(trace: str) -> str | None:
    """The message of a traceback (as text) whose exception is a PipelineError; None for any other."""
    lines = trace.rstrip().splitlines()
    name, _, message = lines[-1].partition(": ") if lines else ("", "", "")
    return message if name in _pipeline_error_names(PipelineError) else None


def _pipeline_error_names(cls: type) -> set[str]:
    """How traceback names PipelineError and its subclasses: module.QualName."""
    names = {f"{cls.__module__}.{cls.__qualname__}"}
    for sub in cls.__subclasses__():
        names |= _pipeline_error_names(sub)
    return names


class ToLuigiInterface(logging.Handler):
    """Hands the records of luigi_tasks' own module loggers (`logging.getLogger(__name__)`) to luigi's
    "luigi-interface" logger, at its level: luigi sets up logging for that logger alone (and
    [core] log_level, --log-level, a user's logging_conf_file set it up), so they show wherever luigi's do."""

    def emit(self, record: logging.LogRecord) -> None:
        interface = logging.getLogger("luigi-interface")
        if record.levelno >= interface.getEffectiveLevel():
            interface.handle(record)


# luigi exits 0 on failure unless [retcode] is set: cron and CI must see failures. A config file may set its own.
RETCODES = {
    "already_running": 10,
    "missing_data": 20,
    "not_run": 25,
    "task_failed": 30,
    "scheduling_error": 35,
    "unhandled_exception": 40,
}


def on_import() -> None:
    logger = logging.getLogger("luigi-interface")
    if not any(isinstance(f, OneLineFailures) for f in logger.filters):
        logger.addFilter(OneLineFailures())
    ours = logging.getLogger("luigi_tasks")
    if not any(isinstance(h, ToLuigiInterface) for h in ours.handlers):
        ours.addHandler(ToLuigiInterface())
        ours.setLevel(logging.DEBUG)  # the handler applies luigi-interface's level
        ours.propagate = False
    if not _started_by_luigi_cli():
        return
    _default_retcodes()
    _cache_completion()
    _one_line_for_an_unknown_task()
    args = _command_line()
    if args.help:
        return  # luigi prints the options and exits: nothing runs
    check_scheduler(args)
    _use_timestamps(args)
    summary.arm()


def _default_retcodes() -> None:
    """RETCODES for each [retcode] key the config files leave unset (luigi reads them after this import)."""
    config = luigi.configuration.get_config()
    if not config.has_section("retcode"):
        config.add_section("retcode")
    for key, code in RETCODES.items():
        if not config.has_option("retcode", key):
            config.set("retcode", key, str(code))


def _cache_completion() -> None:
    """[worker] cache_task_completion = true unless a config file says otherwise: a task found done, or run, is not
    asked again in the run. Luigi asks a wrapper's requirements again before it runs (IngestMonth's sinks, every
    IngestMonth of a Backfill): over the whole history that was thousands of round trips to the sinks."""
    config = luigi.configuration.get_config()
    if not config.has_option("worker", "cache_task_completion"):
        if not config.has_section("worker"):
            config.add_section("worker")
        config.set("worker", "cache_task_completion", "true")


def _one_line_for_an_unknown_task() -> None:
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, trace) -> None:
        if not issubclass(kind, luigi.task_register.TaskClassNotFoundException):
            previous(kind, value, trace)
            return
        asked = _asked_task(str(value))
        tasks = sorted(sys.modules["luigi_tasks"].__all__)
        close = difflib.get_close_matches(asked, tasks, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"no task named {asked!r}{hint}; luigi_tasks' tasks are {', '.join(tasks)}", file=sys.stderr)
        # The exception reaches here after luigi's exit-code handling, and an excepthook cannot choose the
        # exit code; nothing has started yet (no scheduler, no lock, no task), so the process ends here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(RETCODES["unhandled_exception"])

    sys.excepthook = hook


def _asked_task(message: str) -> str:
    """The task name in luigi's 'No task NAME. ...' message."""
    return message.removeprefix("No task ").split(".", 1)[0].strip()


def _started_by_luigi_cli() -> bool:
    """True in the process of `luigi ...` or `python -m luigi ...`, not in its workers nor under luigi.build()."""
    cmdline = sys.modules.get("luigi.cmdline")
    main = sys.modules.get("__main__")
    return (
        cmdline is not None
        and getattr(main, "luigi_run", None) is cmdline.luigi_run
        and multiprocessing.parent_process() is None
    )


def _command_line() -> argparse.Namespace:
    """The few luigi options read here; luigi itself parses them again, and all the others, later."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--local-scheduler", nargs="?", const="true")
    parser.add_argument("--scheduler-host")
    parser.add_argument("--scheduler-port", type=int)
    parser.add_argument("--scheduler-url")
    parser.add_argument("--log-level")
    parser.add_argument("--logging-conf-file")
    parser.add_argument("--help", "--help-all", action="store_true")
    return parser.parse_known_args(sys.argv[1:])[0]


def scheduler_url(args: argparse.Namespace) -> str | None:
    """The central scheduler this run would use, or None for the local scheduler; options beat luigi.cfg."""
    core = luigi.interface.core()  # luigi's own defaults and config; the options are not parsed yet
    local = core.local_scheduler if args.local_scheduler is None else args.local_scheduler.lower() == "true"
    if local:
        return None
    url = args.scheduler_url if args.scheduler_url is not None else core.scheduler_url
    if url:
        return url
    host = args.scheduler_host or core.scheduler_host
    return f"http://{host}:{args.scheduler_port or core.scheduler_port}/"


def check_scheduler(args: argparse.Namespace) -> None:
    """Exit with [retcode] scheduling_error and one line if the central scheduler does not accept connections."""
    url = scheduler_url(args)
    problem = None if url is None else scheduler_problem(url)
    if problem:
        print(problem, file=sys.stderr)
        codes = luigi.retcodes.retcode()
        raise SystemExit(codes.scheduling_error or codes.unhandled_exception)


def shown_url(url: str) -> str:
    """scheme://host:port of a scheduler URL: no user:password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def scheduler_problem(url: str) -> str | None:
    """Why the central scheduler at `url` does not accept connections, in one line; None when it does."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        return (
            f"cannot reach the central scheduler at {shown_url(url)}: {connection_failure(exc, CONNECT_TIMEOUT)}"
            " (start it with bin/luigid, or run with --local-scheduler)"
        )
    return None


def connection_failure(exc: OSError, timeout: float) -> str:
    """Why a connection failed, in a few words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return exc.strerror or str(exc)


def _use_timestamps(args: argparse.Namespace) -> None:
    """Use the shipped logging.cfg (luigi's INFO format, with the time), unless logging is set up otherwise."""
    config = luigi.configuration.get_config()
    level = args.log_level or config.get("core", "log_level", "DEBUG")
    own_setup = args.logging_conf_file or config.get("core", "logging_conf_file", "")
    if level.upper() == "INFO" and not own_setup and not config.getboolean("core", "no_configure_logging", False):
        config.set("core", "logging_conf_file", str(LOGGING_CONF))
