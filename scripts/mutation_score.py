"""Kill rate per module from mutmut's results: reads mutants/**/*.py.meta, writes nothing.

Run after `mutmut run` (see `make mutation`): python scripts/mutation_score.py [--survivors]
Timeouts count as killed (mutmut's own convention); "no tests" and "suspicious" count as alive.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3, 24, -24, 36, 152, 255}  # test failure, pytest internal error, timeouts
NO_TESTS = {5, 33}


def classify(code: int | None) -> str:
    """mutmut's exit code of one mutant run as killed / survived / no tests / not checked."""
    if code in KILLED:
        return "killed"
    if code in NO_TESTS:
        return "no tests"
    return {0: "survived", None: "not checked"}.get(code, "suspicious")


def module_results(meta: Path) -> dict[str, int | None]:
    """Exit code of each mutant of one module, by mutant name."""
    return json.loads(meta.read_text())["exit_code_by_key"]


def main() -> None:
    show_survivors = "--survivors" in sys.argv
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        codes = module_results(meta)
        if not codes:
            continue
        status = Counter(classify(code) for code in codes.values())
        killed, total = status["killed"], len(codes)
        module = str(meta.relative_to("mutants")).removesuffix(".meta")
        detail = ", ".join(f"{n} {s}" for s, n in sorted(status.items()) if s != "killed")
        print(f"{module}: {killed}/{total} killed ({killed / total:.1%}); {detail or 'none alive'}")
        if show_survivors:
            for name, code in codes.items():
                if code not in KILLED:
                    print(f"    {code}\t{name}")


if __name__ == "__main__":
    main()
