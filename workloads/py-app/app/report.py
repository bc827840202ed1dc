"""Summarise a YAML list of build timings as a text table: the py-app workload's program."""

import sys

import click
import jinja2
import numpy
import yaml

TEMPLATE = jinja2.Template(
    "{% for name, s in rows %}{{ '%-12s' % name }} mean {{ '%6.2f' % s.mean }}s  p90 {{ '%6.2f' % s.p90 }}s\n{% endfor %}"
)
SAMPLE = """
cold: [61.0, 58.2, 63.9]
warm: [1.2, 1.1, 1.3]
"""


def summarise(text: str) -> str:
    data = yaml.safe_load(text)
    rows = []
    for name, seconds in sorted(data.items()):
        values = numpy.array(seconds, dtype=float)
        rows.append((name, {"mean": float(values.mean()), "p90": float(numpy.percentile(values, 90))}))
    return TEMPLATE.render(rows=rows)


@click.command()
@click.option("--selftest", is_flag=True, help="summarise a built-in sample and check the result")
@click.argument("path", required=False)
def main(selftest: bool, path: str | None) -> None:
    if selftest:
        out = summarise(SAMPLE)
        assert out.startswith("cold") and "warm" in out, out
        click.echo(out, nl=False)
        return
    if not path:
        sys.exit("usage: report.py [--selftest] FILE.yaml")
    with open(path) as fh:
        click.echo(summarise(fh.read()), nl=False)


if __name__ == "__main__":
    main()
