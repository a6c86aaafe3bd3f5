"""How luigi_tasks behaves under luigi's command line (`luigi --module luigi_tasks`, bin/luigi-run).

Luigi imports this package while it parses the command line, before it sets up logging or contacts a
scheduler; `on_import` uses that moment to
- stop at once, in one line, when the central scheduler cannot be reached (luigi would retry for a
  minute and print ten tracebacks),
- put the time on every log line (luigi's default format has none),
- collect the run's events for the end-of-run table of months (luigi_tasks.summary).
Failures we explain (PipelineError) are logged in one line instead of a traceback, under any runner.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import luigi.configuration
import luigi.interface
import luigi.retcodes

from luigi_tasks import errors, summary
from luigi_tasks.errors import PipelineError

LOGGING_CONF = Path(__file__).with_name("logging.cfg")
CONNECT_TIMEOUT = 5.0  # seconds to wait for the scheduler to accept a connection


class OneLineFailures(logging.Filter):
    """Luigi's "Worker ... failed Task" record with our message appended, and no traceback, for a PipelineError;
    and its "Will not run ... due to error in complete() method" record (which carries the traceback as text)
    likewise."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, PipelineError):
            record.msg = f"{record.msg}: %s"
            record.args = (*(record.args or ()), error)
            record.exc_info = record.exc_text = None
        elif isinstance(record.msg, str) and _COMPLETE_ERROR in record.msg:
            headline, _, traceback = record.msg.partition(_COMPLETE_ERROR)
            last = traceback.rstrip().rpartition("\n")[2]
            name, _, message = last.partition(": ")
            if name.removeprefix(f"{errors.__name__}.") in _OUR_ERRORS:
                record.msg, record.args = f"{headline}{_COMPLETE_ERROR[:-2]}: %s", (message,)
        return True


_COMPLETE_ERROR = " due to error in complete() method:\n"
_OUR_ERRORS = {
    name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, PipelineError)
}


def on_import() -> None:
    logger = logging.getLogger("luigi-interface")
    if not any(isinstance(f, OneLineFailures) for f in logger.filters):
        logger.addFilter(OneLineFailures())
    if not _started_by_luigi_cli():
        return
    args = _command_line()
    if args.help:
        return  # luigi prints the options and exits: nothing runs
    check_scheduler(args)
    _use_timestamps(args)
    summary.arm()


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
    if url is None:
        return
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as exc:
        shown = f"{parts.scheme}://{parts.hostname}:{port}"  # no user:password from the URL
        print(
            f"cannot reach the central scheduler at {shown}: {_reason(exc)}"
            " (start it with bin/luigid, or run with --local-scheduler)",
            file=sys.stderr,
        )
        codes = luigi.retcodes.retcode()
        raise SystemExit(codes.scheduling_error or codes.unhandled_exception) from None


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
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
