"""The documents made from :data:`orchestrator.options.OPTIONS`: README's options table and the
container entry point's list of switches.

    python -m orchestrator.option_documents README.md docker/entrypoint.sh

rewrites both between their markers (``make readme-options``); the markers keep naming
orchestrator/options.py, where the declarations are. Neither is on the start-up path.
"""

from __future__ import annotations

from orchestrator.options import OPTIONS, boolean


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_table() -> str:
    """README's options table, one row per option in :data:`OPTIONS`'s order."""
    rows = ["| flag | env twin | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        flag = f"`{option.name}`"
        if option.switch:
            flag += f" / `--no-{option.name[2:]}`"
        env = f"`{option.env}`"
        if option.switch or option.convert is boolean:
            env += " (`true`/`false`)"
        shown = option.shown_default or "none"
        rows.append(f"| {flag} | {env} | {_cell(shown)} | {_cell(option.help)} |")
    return "\n".join(rows) + "\n"


TABLE_START = "<!-- options table: made by `make readme-options` from orchestrator/options.py -->"
TABLE_END = "<!-- end of options table -->"


def _between(text: str, start: str, end: str, made: str, where: str) -> str:
    """``text`` with what lies between the lines ``start`` and ``end`` replaced by ``made``."""
    head, found_start, rest = text.partition(start)
    _, found_end, tail = rest.partition(end)
    if not found_start or not found_end:
        raise ValueError(f"{where} lacks the markers {start!r} and {end!r}")
    return f"{head}{start}\n{made}{end}{tail}"


def with_table(readme: str) -> str:
    """``readme`` with the text between the table's markers replaced by :func:`readme_table`."""
    return _between(readme, TABLE_START, TABLE_END, readme_table(), "README")


def switch_flags() -> list[str]:
    """Every flag that takes no value: what docker/entrypoint.sh must know to find the notebook
    folder and ``--state-dir`` in a command line exactly as the parser does."""
    flags = ["-h", "--help"]
    for option in OPTIONS:
        if option.switch:
            flags += [option.name, f"--no-{option.name[2:]}"]
    return flags


SWITCHES_START = "# switches: made by `make readme-options` from orchestrator/options.py"
SWITCHES_END = "# end of switches"


def with_switches(script: str) -> str:
    """The entry point's ``script`` with its list of switches made from :data:`OPTIONS`."""
    line = f"readonly switches=' {' '.join(switch_flags())} '\n"
    return _between(script, SWITCHES_START, SWITCHES_END, line, "the entry point")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    for name in sys.argv[1:]:
        path = Path(name)
        text = path.read_text(encoding="utf-8")
        made = with_switches(text) if path.suffix == ".sh" else with_table(text)
        path.write_text(made, encoding="utf-8")
