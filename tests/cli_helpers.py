"""Running the `mmsim` command in-process, as the command-line tests do."""

from click.testing import CliRunner

from mmsim.cli import main


def run(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``mmsim ARGS``; a Python traceback fails the test."""
    result = CliRunner().invoke(main, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit), f"traceback: {result.exception!r}"
    return result.exit_code, result.stdout, result.stderr
