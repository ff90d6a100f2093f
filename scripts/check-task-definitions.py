#!/usr/bin/env python3
"""Validates ECS task definition files against RegisterTaskDefinition's input
shape in the official AWS service model (botocore's copy of it): unknown or
misspelt keys, missing required ones, wrong types, out-of-range numbers and
values outside an enum all fail, each named by its path in the file.

    scripts/check-task-definitions.py examples/task-definitions/*.json

Needs botocore (pip install botocore). Exit 0 when every file is valid, 1
when one is not, 2 on a usage error.
"""
import json
import sys

try:
    import botocore.session
    from botocore.validate import ParamValidator
except ImportError:
    print("check-task-definitions: botocore is missing (pip install botocore)", file=sys.stderr)
    sys.exit(3)


def enum_errors(value, shape, path):
    """What ParamValidator leaves out: enum membership, recursively."""
    errors = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, member in shape.members.items():
            if key in value:
                errors += enum_errors(value[key], member, f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            errors += enum_errors(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for k, v in value.items():
            errors += enum_errors(v, shape.value, f"{path}.{k}")
    elif shape.type_name == "string" and isinstance(value, str):
        allowed = shape.enum
        if allowed and value not in allowed:
            errors.append(f"{path}: {value!r} is not one of {', '.join(allowed)}")
    return errors


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    failed = 0
    for path in paths:
        try:
            with open(path) as f:
                params = json.load(f)
        except (OSError, ValueError) as e:
            print(f"{path}: {e}")
            failed += 1
            continue
        problems = []
        report = ParamValidator().validate(params, shape)
        if report.has_errors():
            problems.append(report.generate_report())
        problems += enum_errors(params, shape, "taskDefinition")
        if problems:
            failed += 1
            print(f"{path}: INVALID")
            for p in problems:
                print("  " + p.replace("\n", "\n  "))
        else:
            print(f"{path}: ok")
    print(f"{len(paths) - failed} of {len(paths)} valid (botocore {botocore.__version__}, ecs API {model.api_version})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
