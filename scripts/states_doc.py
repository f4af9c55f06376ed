"""Write docs/boxes.md's tables of box states from core/states.py's table.

    python scripts/states_doc.py           rewrite the tables in docs/boxes.md
    python scripts/states_doc.py --check   exit 1, naming the command above, if
                                           they differ from what it would write
                                           (`make lint` runs this)

The tables sit between two HTML comments in docs/boxes.md; the text around
them is the doc's own.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "boxes.md"
BEGIN = ("<!-- states:begin: written by scripts/states_doc.py from "
         "src/microbox/core/states.py; do not edit -->")
END = "<!-- states:end -->"
REGENERATE = "python scripts/states_doc.py"


def tables() -> str:
    sys.path.insert(0, str(ROOT / "src"))  # this checkout's code, whatever is installed
    from microbox.core.states import KEPT, REMOVED, TRANSITIONS, refusal
    from microbox.store.status import Status

    def names(statuses: tuple[Status, ...]) -> str:
        return ", ".join(f"`{s}`" for s in statuses)

    out = ["| action | acts on a box that is | and leaves it | |", "| --- | --- | --- | --- |"]
    for action, rule in TRANSITIONS.items():
        what = f"*{action}* (microbox)" if rule.internal else f"`{action}`"
        acts = names(rule.acts_from) or "(a new box)"
        if rule.idle:
            acts += f"; {names(rule.idle)}: nothing to do"
        if rule.force:
            acts += "; any, with `-f`"
        to = {KEPT: "as it was", REMOVED: "removed"}.get(rule.to, f"`{rule.to}`")
        out.append(f"| {what} | {acts} | {to} | {rule.note} |")

    asked = [(a, r) for a, r in TRANSITIONS.items() if not r.internal and r.acts_from]
    out += ["", "What each status answers an action: ✓ it acts, · it has nothing to do, "
            "otherwise the command its refusal names, to run first (✗: it names none: "
            "the box is starting, a pool's, or running already).", "",
            "| status | " + " | ".join(f"`{a}`" for a, _ in asked) + " |",
            "| --- |" + " --- |" * len(asked)]
    for status in Status:
        cells = []
        for action, rule in asked:
            if status in rule.acts_from:
                cells.append("✓")
            elif status in rule.idle:
                cells.append("·")
            else:
                way = refusal("BOX", status, action).recovery
                cells.append(f"`{way.removeprefix('microbox ').replace(' BOX', '')}`"
                             if way else "✗")
        out.append(f"| `{status}` | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def rewritten(doc: str) -> str:
    start, end = doc.find(BEGIN), doc.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{DOC} has no '{BEGIN}' ... '{END}' block to write the tables in")
    return doc[:start] + BEGIN + "\n\n" + tables() + "\n" + doc[end:]


def main(argv: list[str]) -> int:
    doc = DOC.read_text()
    want = rewritten(doc)
    if argv[1:] == ["--check"]:
        if want != doc:
            print(f"{DOC.relative_to(ROOT)}: the tables of box states differ from "
                  f"src/microbox/core/states.py; run '{REGENERATE}' to write them",
                  file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    if want != doc:
        DOC.write_text(want)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
