"""What every task shares: the console, the recap of a run, one way to refuse (exit 2 with
the problem and the fix, never a traceback), options parsed by the kit instead of
invoke's casts, and a parser context for tasks whose positional NAME is optional once
--list is given (invoke has no optional positionals)."""

from __future__ import annotations

import functools
import sys

import invoke.collection
from invoke import Exit
from invoke.parser import ParserContext
from invoke.util import Lexicon

from runbook_checks.core.errors import KitError
from runbook_checks.core.results import print_recap


def console():
    from rich.console import Console

    # a pipe or a log gets whole tables, not ones cut to 80 columns
    return Console() if sys.stdout.isatty() else Console(width=120)


def show(result) -> None:
    """The recap of one run and where its record is."""
    print_recap(result.report)
    console().print(f"record: {result.notebook}\nreport: {result.report_path}", soft_wrap=True)


def refusals(func):
    """A KitError from the task (a refused value, option or state) exits 2 with its
    problem and fix; nothing else of the kit prints a traceback for bad input."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except KitError as exc:
            raise Exit(f"error: {exc}", code=2) from None
    return wrapper


def run_and_show(name: str, profile: str, mode: str, sets: tuple[str, ...], host: str = "") -> None:
    """Run a runbook here, or inside a rehearsal host (its records come back to runs/);
    print the recap or where the records are; exit 1 (or the host's code) on a failure."""
    from runbook_checks.core import runner

    if host:
        from runbook_checks.production import rehearsal

        code, records = rehearsal.run_runbook(host, name, profile, mode, sets)
        console().print("\n".join(f"report: {r}" for r in records), soft_wrap=True)
        if code:
            raise Exit(code=code)
        return
    result = runner.run(name, profile, mode, sets)
    show(result)
    if result.report.status == "failed":
        raise Exit(code=1)


def port_option(value: str, option: str) -> int:
    """A port given as an option (invoke's own int cast would print a traceback)."""
    text = str(value).strip()
    if not text:
        return 0
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise KitError(f"{option} {value!r} is not a TCP port", f"give a number from 1 to 65535, e.g. {option} 15000")
    return int(text)


def sets_of(set_) -> tuple[str, ...]:
    return tuple(set_ or ())


class _MarkingFlags(Lexicon):
    """Flags that remember when --list was switched to (the parser looks it up then)."""

    def __getitem__(self, key):
        arg = super().__getitem__(key)
        if getattr(arg, "name", "").rstrip("_") == "list":
            arg.kit_listing = True
        return arg


class ListingContext(ParserContext):
    """A task's parser context whose positional NAME is not required once --list is
    given: `TASK --list`, `TASK --list NAME` and `TASK NAME --list` all parse. Contexts
    without a `list` option behave as invoke's own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        object.__setattr__(self.flags, "__class__", _MarkingFlags)  # the same flags and aliases, remembering --list

    @property
    def missing_positional_args(self):
        listing = self.args.get("list")
        if listing is not None and (getattr(listing, "kit_listing", False) or listing.raw_value is not None):
            return []
        return super().missing_positional_args


# invoke builds each task's parser context in Collection.to_contexts from a copy of the
# tasks module's collection, so a Collection subclass would be lost: give it this class.
invoke.collection.ParserContext = ListingContext
