"""What every `vigil` subcommand shares: consoles, common options, failing clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

out = Console()
err = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML settings file (default: $VIGIL_CONFIG).",
                 exists=False, dir_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print `error: message` on stderr and exit with `code`."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)
