"""Running drills: a sandbox per drill, N trials in it (each fault leaves the sandbox as
its recovery left it: the next trial starts from there), a JSON record per trial under
runs/drills/<stamp>/, and a recap."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Callable

from ..core import files
from ..core.errors import ParameterError
from .faults import FAULTS, Fault, Trial, run_trial
from .sandbox import sandbox


def catalogue(host: str = "") -> dict[str, Fault]:
    """The drills for a sandbox here, or (`host`) for a rehearsal host's production builder."""
    from .onhost import HOST_FAULTS

    return HOST_FAULTS if host else FAULTS


def chosen(names: list[str] | tuple[str, ...], host: str = "") -> list[Fault]:
    """The faults named (all for "all" or none named), or a refusal naming the choices."""
    faults = catalogue(host)
    if not names or list(names) == ["all"]:
        return list(faults.values())
    unknown = [n for n in names if n not in faults]
    if unknown:
        where = f"on a rehearsal host (--host {host})" if host else "in a sandbox here (--host H: a rehearsal host's)"
        raise ParameterError(f"no drill named {', '.join(unknown)} {where}", f"choose from: {', '.join(faults)} (or all)")
    return [faults[n] for n in names]


def run(faults: list[Fault], times: int, folder: Path, say: Callable[[str], None] = print, host: str = "") -> list[Trial]:
    """Each fault `times` times: in a sandbox of its own here, or on the rehearsal host `host`."""
    from . import onhost

    if times < 1:
        raise ParameterError(f"--times {times}: a drill runs at least once", "give --times 1 or more")
    files.writable_dir(folder, what="drill records")
    trials: list[Trial] = []
    for fault in faults:
        where = f"the production builder of {host}" if host else "a sandbox of its own"
        say(f"{fault.name}: {fault.summary} ({where}, {times} trial{'s' if times > 1 else ''})")
        with (onhost.hostbox(host) if host else sandbox()) as box:
            if fault.setup:
                fault.setup(box)
            for number in range(1, times + 1):
                trial = (onhost.run_trial if host else run_trial)(box, fault, number)
                files.atomic_write(folder / f"{fault.name}-{number:02d}.json", json.dumps(trial.to_dict(), indent=2) + "\n")
                trials.append(trial)
                say(line(trial))
    return trials


def line(t: Trial) -> str:
    if t.error:
        return f"  {t.drill} #{t.trial}: FAILED: {t.error}"
    wrong = [f"{k}: {v}" for k, v in t.checks.items() if v != "ok"]
    verdict = "passed" if t.passed else "FAILED: " + "; ".join(wrong)
    return (f"  {t.drill} #{t.trial}: {verdict}: detected in {t.detect_seconds:.1f}s ({t.detected_by[:70]}),"
            f" recovered in {t.recover_seconds:.1f}s by {t.recovered_by}")


def summary(trials: list[Trial]) -> list[dict]:
    """One row per drill: passed/total, median detection and recovery seconds, by what."""
    rows = []
    for name in dict.fromkeys(t.drill for t in trials):
        mine = [t for t in trials if t.drill == name]
        ran = [t for t in mine if not t.error] or mine
        rows.append({"drill": name, "passed": sum(t.passed for t in mine), "trials": len(mine),
                     "detect_s": round(statistics.median(t.detect_seconds for t in ran), 2),
                     "recover_s": round(statistics.median(t.recover_seconds for t in ran), 2),
                     "recovered_by": ran[0].recovered_by,
                     "lost": sorted({re.sub(r" \(.*?\)", "", x) for t in mine for x in t.lost})})
    return rows


def recap_table(trials: list[Trial], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("drill", "passed", "detect s (median)", "recover s (median)", "recovered by", "lost"):
        table.add_column(col, overflow="fold")
    for row in summary(trials):
        table.add_row(row["drill"], f"{row['passed']}/{row['trials']}", f"{row['detect_s']:.1f}",
                      f"{row['recover_s']:.1f}", row["recovered_by"], "; ".join(row["lost"]) or "nothing")
    return table


def markdown(trials: list[Trial], caption: str) -> str:
    """The recap as a Markdown table, for the site."""
    rows = ["| drill | passed | detect s (median) | recover s (median) | recovered by | lost |",
            "|---|---|---|---|---|---|"]
    for row in summary(trials):
        rows.append(f"| `{row['drill']}` | {row['passed']}/{row['trials']} | {row['detect_s']:.1f} |"
                    f" {row['recover_s']:.1f} | {row['recovered_by']} | {'; '.join(row['lost']) or 'nothing'} |")
    return "\n".join(rows) + f"\n\n{caption}\n"


def publish(trials: list[Trial], page: Path, caption: str, block: str = "results") -> None:
    """Put the recap between `page`'s markers <!-- drills:BLOCK --> and <!-- /drills:BLOCK -->
    (results: the sandbox drills; results-host: a rehearsal host's), written atomically."""
    begin, end = f"<!-- drills:{block} -->", f"<!-- /drills:{block} -->"
    text = page.read_text()
    if begin not in text or end not in text:
        raise ParameterError(f"{page} has no {begin} ... {end} block to put the results in",
                             "add the two markers where the table goes")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    files.atomic_write(page, f"{head}{begin}\n{markdown(trials, caption)}{end}{tail}")


def read_records(folder: Path) -> list[Trial]:
    return [Trial(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
