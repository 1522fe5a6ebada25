"""Command-line parsing shared by the project's commands: bad flags give one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Collection, Mapping
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line naming the command (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def did_you_mean(name: object, known: Collection, see: str, aliases: Mapping[str, str] | None = None) -> str:
    """The end of an `unknown NAME` message: the closest known name (difflib; else the closest of `aliases`, names
    used elsewhere for a known one), or `see`, where the list is: never the whole list."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    if not close and aliases:
        close = [aliases[a] for a in difflib.get_close_matches(str(name), list(aliases), n=1)]
    return f"did you mean {close[0]!r}?" if close else see


def unknown_key(kind: str, names: Collection, known: Collection, see: str, aliases=None) -> str:
    """`unknown KIND 'NAME'; did you mean 'X'?` for the first of `names` (and how many more), in one short line."""
    first = sorted(map(str, names))[0]
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    shown = first if len(first) <= 40 else first[:37] + "..."
    return f"unknown {kind} {shown!r}{more}; {did_you_mean(first, known, see, aliases)}"
