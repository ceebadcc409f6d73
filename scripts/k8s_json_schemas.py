#!/usr/bin/env python3
"""Kubernetes JSON schemas for kubeconform, made offline from the OpenAPI (swagger 2.0) spec that the
k8s.io/kubernetes Go module ships (api/openapi-spec/swagger.json), in the layout of
yannh/kubernetes-json-schema: OUT/v<version>-standalone-strict/<kind><kind suffix>.json, e.g.
statefulset-apps-v1.json. kubeconform normally downloads those from GitHub; scripts/kubeconform-install
runs this instead.

Each file is one resource kind: its definition at the root (with `kind` and `apiVersion` pinned to that
kind), and the definitions it reaches through $ref under "definitions" (so recursive types such as
JSONSchemaProps stay finite). Strict, like the "-strict" schema sets: every object schema that lists its
properties gets additionalProperties: false, so an unknown or misspelt field fails. As kubectl and the
published sets do, IntOrString accepts a string or an integer and Quantity a string or a number.

Usage: k8s_json_schemas.py SWAGGER_JSON OUT_DIR VERSION   (VERSION like 1.35.4)
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

Schema = dict[str, Any]
REF_PREFIX = "#/definitions/"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def strict(schema: Any) -> None:
    """Walk schema positions only (not property-name maps): a property called `properties` is no keyword."""
    if not isinstance(schema, dict):
        return
    if schema.get("format") == "int-or-string":
        schema.clear()
        schema["oneOf"] = [{"type": "string"}, {"type": "integer"}]
        return
    if "properties" in schema:
        schema.setdefault("additionalProperties", False)
        for sub in schema["properties"].values():
            strict(sub)
    if isinstance(schema.get("items"), dict):
        strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        strict(schema["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            strict(sub)


def refs(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(REF_PREFIX):
            found.add(ref[len(REF_PREFIX) :])
        for value in schema.values():
            found |= refs(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= refs(value)
    return found


def closure(root: Schema, definitions: dict[str, Schema]) -> dict[str, Schema]:
    todo, seen = list(refs(root)), set[str]()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(refs(definitions[name]) - seen)
    return {name: definitions[name] for name in sorted(seen)}


def file_name(kind: str, group: str, version: str) -> str:
    """kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}: kind, the group's first label, the version."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind}{suffix}".lower() + ".json"


def generate(swagger: Schema, out: Path) -> int:
    definitions: dict[str, Schema] = copy.deepcopy(swagger["definitions"])
    definitions[INT_OR_STRING] = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    definitions[QUANTITY] = {"oneOf": [{"type": "string"}, {"type": "number"}]}
    for definition in definitions.values():
        strict(definition)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for _, definition in sorted(definitions.items()):
        for gvk in definition.get("x-kubernetes-group-version-kind", []):
            group, version, kind = gvk["group"], gvk["version"], gvk["kind"]
            root = copy.deepcopy(definition)
            props = root.get("properties", {})
            if "kind" not in props or "apiVersion" not in props:
                continue  # not a top-level object (e.g. WatchEvent variants)
            props["kind"] = {"type": "string", "enum": [kind]}
            props["apiVersion"] = {"type": "string", "enum": [f"{group}/{version}" if group else version]}
            root["required"] = sorted({*root.get("required", []), "kind", "apiVersion"})
            root["$schema"] = "http://json-schema.org/draft-07/schema#"
            root["definitions"] = closure(definition, definitions)
            (out / file_name(kind, group, version)).write_text(json.dumps(root, sort_keys=True) + "\n")
            written += 1
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    swagger_path, out_dir, version = Path(argv[1]), Path(argv[2]), argv[3].removeprefix("v")
    swagger = json.loads(swagger_path.read_text(encoding="utf-8"))
    out = out_dir / f"v{version}-standalone-strict"
    written = generate(swagger, out)
    print(f"k8s_json_schemas: {written} schemas for Kubernetes {version} in {out}", file=sys.stderr)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
