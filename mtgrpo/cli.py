"""The ``mtgrpo`` command line: parses arguments and calls one command module per subcommand.

Each module in ``mtgrpo/commands/`` exposes ``add_arguments(parser)`` and ``run(args) -> int``
and is imported only when its command runs, so ``mtgrpo --help`` and ``mtgrpo render`` never
import torch. One error boundary: a user mistake (``UserError``) prints one line per problem and
exits 1; Ctrl-C exits 130; anything else is a bug and exits 3 with its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Sequence

from mtgrpo import __version__
from mtgrpo.errors import UserError

# name -> (module under mtgrpo.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("render", "render recipes into manifests/ and kustomization.yaml (validates first)"),
    "validate": ("validate", "validate recipes and the resources they render; write nothing"),
    "diff": ("diff", "re-render in memory and compare with manifests/ (exit 1 on drift)"),
    "train": ("train", "run the MT-GRPO trainer locally on a trainer config YAML"),
    "status": ("status", "show TrainingJob and HyperParameterTuningJob status from the cluster"),
    "wait": ("wait", "wait until a job completes (exit 0), fails (1) or is terminal (2)"),
    "logs": ("logs", "print a job's CloudWatch logs, interleaved across hosts"),
    "artifacts": ("artifacts", "print (and optionally download) a job's model artifact"),
    "pipeline": ("pipeline", "compile a tune-then-train Kubeflow pipeline for a tuning recipe"),
    "plan": ("plan", "will each recipe run and fit on its instance, and what may it cost"),
    "metrics": ("metrics", "print the last value of each of a job's metrics (CloudWatch)"),
    "plot": ("plot", "draw training curves of runs or jobs into a PNG (needs mtgrpo[plot])"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtgrpo", description="Multi-turn GRPO on SageMaker, driven from Kubernetes.")
    parser.add_argument("--version", action="version", version=f"mtgrpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(f"mtgrpo.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"mtgrpo {name}", description=help_text)
    module.add_arguments(parser)
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        if argv and not argv[0].startswith("-"):
            top.error(f"unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)})")
        top.parse_args(argv or ["--help"])
        return 0
    try:
        parser, module = _command_parser(argv[0])
        args = parser.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except UserError as err:
        for line in err.report():
            print(f"error: {line}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as err:  # an optional dependency the command reached for
        from mtgrpo.commands._extras import extra_problem, missing_extra

        extra = missing_extra(err.name)
        if extra is None:
            traceback.print_exc()
            print("error: internal error (a bug in mtgrpo); please report the traceback above",
                  file=sys.stderr)
            return 3
        for line in extra_problem(extra, argv[0], [str(err.name).split(".")[0]]).report():
            print(f"error: {line}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except Exception:  # a bug, not a user mistake: keep the traceback for the report
        traceback.print_exc()
        print("error: internal error (a bug in mtgrpo); please report the traceback above",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
