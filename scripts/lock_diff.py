"""Print, on one line, the installed packages whose versions differ from a pip-compile lock file.

    python scripts/lock_diff.py requirements/test.lock

Run with the interpreter of the environment to compare (``make test-latest`` runs it with
``.venv-latest``'s). Exit status 0 when nothing differs, 1 otherwise.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: str) -> dict[str, str]:
    pins = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            match = _PIN.match(line.strip())
            if match:
                pins[canonical(match.group(1))] = match.group(2)
    return pins


def differences(pins: dict[str, str]) -> list[str]:
    installed = {
        canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]
    }
    out = []
    for name, locked in sorted(pins.items()):
        have = installed.get(name)
        if have is not None and have != locked:
            out.append(f"{name} {locked} -> {have}")
    out += [
        f"{name} (new) {installed[name]}"
        for name in sorted(set(installed) - set(pins))
        if name not in ("pip", "setuptools", "wheel", "moe-roma")
    ]
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    changed = differences(read_lock(argv[0]))
    print(f"versions that differ from {argv[0]}: " + (", ".join(changed) if changed else "none"))
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
