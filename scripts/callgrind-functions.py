"""Lists the functions a callgrind profile saw run, the costliest first.

    python3 scripts/callgrind-functions.py callgrind.out >functions.txt

callgrind names each function once, where it first appears (`fn=(id) name`
for a function's own costs, `cfn=(id) name` for a call to it), and by its
id after that; a cost line after `calls=` is the inclusive cost of that
call, not the calling function's own. Used by scripts/symbol-order.sh.
"""

import re
import sys

RECURSION = re.compile(r"'\d+$")
FN = re.compile(r"(c?)fn=\((\d+)\)(?: (.*))?$")


def functions(lines):
    names, cost, current, call = {}, {}, None, False
    for line in lines:
        m = FN.match(line)
        if m:
            callee, fid, name = m.groups()
            if name:
                names[fid] = name.strip()
            if not callee:
                current = fid
                cost.setdefault(current, 0)
        elif line.startswith("calls="):
            call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if call:
                call = False
            elif current is not None:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    cost[current] += int(parts[1])
    # A recursion level is named apart (`f'2`); valgrind's own entries
    # ("(below main)") are no symbols.
    total = {}
    for i, c in cost.items():
        name = RECURSION.sub("", names.get(i, ""))
        if name and not name.startswith("(") and " " not in name:
            total[name] = total.get(name, 0) + c
    return sorted(total, key=lambda name: -total[name])


if __name__ == "__main__":
    with open(sys.argv[1], errors="replace") as f:
        for name in functions(f):
            print(name)
