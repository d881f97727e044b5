"""The `fmnist` command: the parser built from each command group's module, and main(), which
turns a user's error or a stop into one stderr line and an exit code.

    fmnist study                  # train and compare the four models, write the report
    fmnist train deep_cnn --epochs 10 --out runs/deep
    fmnist predict runs/deep shirt.jpg
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
import traceback
from typing import NoReturn

from fmnist import __version__
from fmnist.cli import audit, data, runs, serve, sweep, train, use
from fmnist.cli.flags import Parser
from fmnist.errors import FmnistError
from fmnist.models.code import TRUST_ENV
from fmnist.stops import Stop
from fmnist.training import distributed


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fmnist", description="Train, compare and use Fashion-MNIST classifiers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--version", action="version", version=f"fmnist {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for group in (data, train, audit, use, runs, serve, sweep):  # the order of `fmnist --help`
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    where = distributed.from_environment().where()  # "[process 1 of 2] " under torchrun
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:  # a bare `fmnist`: what it can do
            parser.print_help()
            return 2
        with trusting(getattr(args, "trust_code", False)):
            return args.func(args)
    except FmnistError as e:
        return fail(f"{getattr(e, 'command', '') or 'fmnist'}: error: {where}{e}", e.exit_code, debug)
    except Stop as e:
        return fail(f"fmnist: {where}{e}", e.exit_code, debug)
    except RuntimeError as e:
        if not where or not distributed.is_group_failure(e):
            raise
        return fail(
            f"fmnist: error: {where}another process of the run failed or stopped, so this one stops "
            f"too ({str(e).strip().splitlines()[0]})",
            1,
            debug,
        )
    except KeyboardInterrupt:
        return fail(f"fmnist: {where}interrupted", 130, debug)
    except BrokenPipeError:  # the reader went away (`fmnist runs | head`): nothing more to say, as a shell's tools
        return 141
    except OSError as e:  # a disk full or a permission denied that no lower layer expected
        return fail(f"fmnist: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), 1, debug)


@contextlib.contextmanager
def trusting(trust: bool):
    """--trust-code as FMNIST_TRUST_CODE=1 for the command, so the processes it starts (serving
    workers) trust as it does; the environment as it was afterwards."""
    before = os.environ.get(TRUST_ENV)
    if trust:
        os.environ[TRUST_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def run(argv: list[str] | None = None) -> NoReturn:
    """`fmnist` as a process: main(), then its exit without the interpreter's teardown. By then every
    file is written and closed; what is left is freeing every object of PyTorch, matplotlib, Captum
    and the rest one by one (1.4 s of a `fast` training's wait on a 2-core AVX2 CPU), and torch's C++
    teardown, which can abort a finished torchrun process (gloo). First, what the interpreter's own
    exit does before its teardown: the threads' exit (thread pools told to stop, then every
    non-daemon thread joined), the exit handlers (MLflow's, multiprocessing's, logging's), the
    output flushed."""
    code = main(argv)
    threading._shutdown()  # what Py_Finalize calls first: a pool's idle workers would wait forever on a bare join
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing to flush to
            stream.flush()
    os._exit(code)


def fail(line: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    run()
