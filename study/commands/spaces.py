"""`study spaces`: the shipped search spaces, a table each, as the spec file spells values."""

from rich import box
from rich.console import Console
from rich.table import Table

import search_spaces


def print_spaces(console: Console) -> None:
    """A table per shipped space: each parameter, its type, range or choices, scale and
    condition."""

    for name in search_spaces.names():
        space = search_spaces.load(name)
        table = Table(
            title=f"{name}: {space.description}",
            title_justify="left",
            highlight=False,
            box=box.SIMPLE_HEAD,  # no side borders: the five columns fit in 80 characters
            pad_edge=False,
        )
        rows = [(param, dist.type, *describe(dist)) for param, dist in space.params.items()]
        for header in ("parameter", "type", "range or choices", "scale", "condition"):
            # names stay whole; values and conditions wrap between words
            table.add_column(header, no_wrap=header in ("parameter", "type", "scale"))
        for row in rows:
            table.add_row(*row)
        console.print(table)


def describe(dist: object) -> tuple[str, str, str]:
    """A space parameter's values, scale and `when:` condition, as a person writes them."""
    if dist.type == "categorical":
        values = ", ".join(word(choice) for choice in dist.choices)
        scale = ""
    else:
        values = f"{word(dist.low)} .. {word(dist.high)}"
        scale = "log" if dist.log else f"step {word(dist.step)}" if dist.step else "linear"
    condition = " and ".join(
        f"{key} in {', '.join(map(word, wanted))}"
        if isinstance(wanted, list)
        else f"{key} = {word(wanted)}"
        for key, wanted in (dist.when or {}).items()
    )
    return values, scale, condition


def word(value: object) -> str:
    """A YAML value as the spec file spells it: true, false, null, 1e-04."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return f"{value:g}" if isinstance(value, float) else str(value)
