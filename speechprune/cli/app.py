"""The `speechprune` command: global options, command registration, and error handling.

Known problems (SpeechpruneError) become one `error: ...` line on stderr and their exit code
(1, or 2 for usage errors, no command at all among them); --debug shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback

import typer

from .. import __version__
from ..errors import DiskFullError, SpeechpruneError
from ..io import atomic
from ..io.outputs import expand
from . import analyze, bench, export_onnx, invocation, prune, shrink
from . import eval as eval_command

app = typer.Typer(
    name="speechprune",
    help="Make self-supervised speech encoders (wav2vec 2.0, HuBERT, WavLM) smaller and faster, without labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

DEBUG = {"on": False}


def _version(value: bool) -> None:
    if value:
        print(f"speechprune {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    DEBUG["on"] = debug


app.command("analyze")(analyze.command)
app.command("prune")(prune.command)
app.command("shrink")(shrink.command)
app.command("bench")(bench.command)
app.command("eval")(eval_command.command)
app.command("export-onnx")(export_onnx.command)


def main(argv: list[str] | None = None) -> int:
    argv = expand_home([str(arg) for arg in (sys.argv[1:] if argv is None else argv)])
    invocation[:] = argv
    DEBUG["on"] = "--debug" in argv
    command = typer.main.get_command(app)
    if not argv:  # a usage error whichever click typer brings (click 8.1 exited 0 here, 8.2 exits 2)
        print(command.get_help(command.context_class(command, info_name="speechprune")), file=sys.stderr)
        print("error: no command given; choose one of the commands above (speechprune COMMAND --help)", file=sys.stderr)
        return 2
    try:
        result = command.main(args=argv, prog_name="speechprune", standalone_mode=False)
        code = result if isinstance(result, int) else 0
        if code == 130:  # typer turns Ctrl-C into a returned 130, silently (commands return None)
            print("interrupted", file=sys.stderr)
    except typer.Exit as done:
        code = done.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        code = 130
    except SpeechpruneError as error:
        if DEBUG["on"]:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        code = error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    except Exception as error:
        if _is_click_error(error):  # usage errors: unknown option, missing argument (exit 2)
            error.show()
            return error.exit_code
        # a bug: say so in one line unless --debug
        if DEBUG["on"]:
            traceback.print_exc()
        elif atomic.is_disk_full(error):  # not a bug: a write that no code path expected to fail
            print(f"error: {DiskFullError(getattr(error, 'filename', None) or 'the output')}", file=sys.stderr)
        else:
            print(f"error: unexpected {type(error).__name__}: {error} (rerun with --debug for the traceback)", file=sys.stderr)
        code = 1
    return code


def expand_home(argv: list[str]) -> list[str]:
    """The one ``~`` rule of every command: a value that starts with ``~`` (quoted, or after
    ``--option=``, where the shell leaves it) is the home folder, as the shell would expand it.
    No option of speechprune takes a value that starts with ``~`` for anything but a path."""
    def expanded(arg: str) -> str:
        option, equals, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
        return option + equals + expand(value).as_posix() if value.startswith("~") else arg
    return [expanded(arg) for arg in argv]


def _is_click_error(error: Exception) -> bool:
    # typer vendors click in recent releases, so match click's exception protocol, not its class
    return hasattr(error, "show") and isinstance(getattr(error, "exit_code", None), int)


def run() -> None:
    sys.exit(main())
