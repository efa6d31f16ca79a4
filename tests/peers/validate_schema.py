"""Validates TOML config files against the config's JSON Schema with an independent
validator (python-jsonschema, draft 7), as an editor would.

    validate_schema.py SCHEMA FILE...

Prints one line per error (FILE: key.path: message) and exits 1 if there was any.
"""
import json
import sys
import tomllib

from jsonschema import Draft7Validator


def main() -> int:
    with open(sys.argv[1]) as f:
        schema = json.load(f)
    Draft7Validator.check_schema(schema)
    validator = Draft7Validator(schema)
    bad = 0
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
            where = ".".join(str(p) for p in e.absolute_path) or "(top)"
            print(f"{path}: {where}: {e.message}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
