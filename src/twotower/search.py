"""Search an exported model from the shell.

python -m twotower.search exports/gcide "a domestic animal that barks" -k 5
"""

from __future__ import annotations

import argparse
import sys
import warnings

from rich.console import Console
from rich.table import Table

from twotower.errors import user_errors
from twotower.serving import TwoTowerRetriever


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one ``twotower: warning:`` line (no source location)."""
    print(f"twotower: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m twotower.search", description=__doc__)
    parser.add_argument("directory", help="an export directory (python -m twotower.export)")
    parser.add_argument("queries", nargs="+", help="one or more query texts")
    parser.add_argument("-k", type=int, default=10, help="documents per query (10)")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("-k must be >= 1")
    with warnings.catch_warnings():  # restores showwarning when main() returns
        warnings.showwarning = _one_line  # a shell user wants the message, not our source
        try:
            with user_errors():
                retriever = TwoTowerRetriever.load(args.directory)
        except FileNotFoundError as e:
            print(f"twotower: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        console = Console()
        for query, hits in zip(args.queries, retriever.search(args.queries, args.k), strict=True):
            table = Table(title=query)
            for name, justify in (("rank", "right"), ("score", "right"), ("id", "left")):
                table.add_column(name, justify=justify)
            table.add_column("document", overflow="fold")
            for hit in hits:
                table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.doc_id, hit.text)
            console.print(table)


if __name__ == "__main__":
    main()
