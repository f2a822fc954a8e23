"""The README's metric reference table, generated from the metric specs the code declares.

    scripts/metric-table            print the table
    scripts/metric-table --write    replace the table between the markers in README.md
    scripts/metric-table --check    exit 1 if README.md's table differs from the code
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- metrics:start -->", "<!-- metrics:end -->"
HEADER = ("| name | type | labels | help |", "| --- | --- | --- | --- |")

sys.path.insert(0, str(ROOT))

from exporter.collectors import all_metric_specs  # noqa: E402 - needs the path above when run as a script
from exporter.metrics import MetricSpec  # noqa: E402


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(spec: MetricSpec) -> str:
    labels = ", ".join(f"`{label}`" for label in spec.all_labels)
    return f"| `{spec.name}` | {spec.kind.value} | {labels} | {_cell(spec.help)} |"


def render_rows(specs: Iterable[MetricSpec]) -> list[str]:
    return [row(s) for s in sorted(specs, key=lambda s: s.name)]


def render_table(specs: Iterable[MetricSpec]) -> str:
    return "\n".join([*HEADER, *render_rows(specs)])


def split_readme(text: str) -> tuple[str, str, str]:
    """README text before the table (start marker included), the table, and after (end marker on)."""
    try:
        head, rest = text.split(START, 1)
        table, tail = rest.split(END, 1)
    except ValueError:
        raise ValueError(f"README.md must contain {START} and {END} around the metric table") from None
    return head + START, table.strip("\n"), END + tail


def readme_rows(text: str) -> list[str]:
    """The table's data rows as they stand in the README."""
    _, table, _ = split_readme(text)
    return [line.strip() for line in table.splitlines() if line.startswith("|") and line not in HEADER]


def rewrite(text: str, specs: Iterable[MetricSpec]) -> str:
    head, _, tail = split_readme(text)
    return f"{head}\n{render_table(specs)}\n{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if README.md's table is out of date")
    args = parser.parse_args(argv)
    specs = all_metric_specs()
    if args.write:
        README.write_text(rewrite(README.read_text(encoding="utf-8"), specs), encoding="utf-8")
    elif args.check:
        if readme_rows(README.read_text(encoding="utf-8")) != render_rows(specs):
            print("README.md's metric table is out of date: run scripts/metric-table --write",
                  file=sys.stderr)
            return 1
    else:
        print(render_table(specs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
