"""Lints deploy/ with the tools an operator would, and checks every daemon command line
in it against the daemons' own flags.

Usage: check_deploy.py DEPLOY_DIR BIN_DIR
  - deploy/image/Containerfile: hadolint, no findings;
  - deploy/compose/compose.yaml: the Compose specification's schema (check-jsonschema);
  - deploy/helm/meridian: rendered with its values (and with the control plane, console
    and a storage class turned on), every document valid Kubernetes (kubernetes-validate
    --strict). Helm itself has no Debian or PyPI package here, so the chart is rendered by
    render() below, which knows only `{{ .Values.x }}`, `{{ .Release.Name|Namespace }}`
    and whole-line `{{- if .Values.x }}` / `{{- end }}`, and refuses anything else: the
    chart cannot use what this check cannot render;
  - every daemon started by the compose file or the chart takes each flag given to it
    (its `--help` lists it).
Prints OK; exits non-zero naming what failed. Run by tests/tests/deploy.rs.
"""
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

from ruamel.yaml import YAML

DEPLOY, BIN = sys.argv[1], sys.argv[2]
VENV_BIN = os.path.dirname(sys.executable)
DAEMONS = {"region-broker", "control-plane", "mirror", "meridian-console", "meridian"}
yaml = YAML(typ="safe")
failures = []


def tool(name, *args):
    r = subprocess.run([os.path.join(VENV_BIN, name), *args], capture_output=True, text=True)
    return r.returncode, r.stdout + r.stderr


def lookup(values, path):
    v = values
    for part in path.split("."):
        if not isinstance(v, dict) or part not in v:
            raise KeyError(f".Values.{path} is not in values.yaml")
        v = v[part]
    return v


def render(template, values, release):
    out, keep = [], [True]
    for n, line in enumerate(template.splitlines(), 1):
        m = re.fullmatch(r"\s*\{\{-? if \.Values\.([\w.]+) -?\}\}\s*", line)
        if m:
            keep.append(keep[-1] and bool(lookup(values, m.group(1))))
            continue
        if re.fullmatch(r"\s*\{\{-? end -?\}\}\s*", line):
            keep.pop()
            continue
        if not keep[-1]:
            continue

        def sub(m):
            expr = m.group(1).strip()
            if expr.startswith(".Values."):
                v = lookup(values, expr[len(".Values."):])
                return str(v).lower() if isinstance(v, bool) else str(v)
            if expr == ".Release.Name":
                return release
            if expr == ".Release.Namespace":
                return "meridian"
            raise ValueError(f"line {n}: {{{{ {expr} }}}} is not something this check renders")

        out.append(re.sub(r"\{\{-?(.*?)-?\}\}", sub, line))
    if len(keep) != 1:
        raise ValueError("an `if` without its `end`")
    return "\n".join(out) + "\n"


def set_path(values, path, value):
    *parents, last = path.split(".")
    for p in parents:
        values = values[p]
    values[last] = value


def check_flags(where, argv):
    """argv: a daemon's command line (the daemon first)."""
    binary = os.path.basename(argv[0])
    if binary not in DAEMONS:
        return
    helps = subprocess.run([os.path.join(BIN, binary), "--help"], capture_output=True, text=True).stdout
    for arg in argv[1:]:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            if not re.search(rf"(^|\s){re.escape(flag)}[\s=,]", helps):
                failures.append(f"{where}: {binary} has no flag {flag}")


def daemon_argv(container):
    """The daemon command line a compose service or Kubernetes container runs."""
    words = list(container.get("command") or []) + list(container.get("args") or [])
    if words[:2] == ["/usr/bin/tini", "--"]:
        words = words[2:]
    if words[:2] == ["/bin/sh", "-ec"] and len(words) == 3:
        script = words[2].replace("$$", "$")
        if "exec " not in script:
            return []
        words = shlex.split(script.split("exec ", 1)[1])
    return words


# The image.
code, out = tool("hadolint", os.path.join(DEPLOY, "image", "Containerfile"))
if code != 0:
    failures.append(f"hadolint: {out}")

# The compose file.
compose = os.path.join(DEPLOY, "compose", "compose.yaml")
code, out = tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", compose)
if code != 0:
    failures.append(f"compose schema: {out}")
with open(compose) as f:
    services = yaml.load(f)["services"]
for name, service in services.items():
    check_flags(f"compose service {name}", daemon_argv(service))

# The chart, as each kind of release renders it.
chart = os.path.join(DEPLOY, "helm", "meridian")
with open(os.path.join(chart, "values.yaml")) as f:
    defaults = f.read()
scenarios = {
    "a region": {},
    "a region with the control plane and console": {
        "controlPlane.enabled": True,
        "console.enabled": True,
        "brokers.storageClassName": "fast-ssd",
        "mirror.enabled": False,
    },
}
rendered_kinds = set()
for scenario, overrides in scenarios.items():
    values = yaml.load(defaults)
    for k, v in overrides.items():
        set_path(values, k, v)
    docs = []
    templates = os.path.join(chart, "templates")
    for name in sorted(os.listdir(templates)):
        with open(os.path.join(templates, name)) as f:
            try:
                text = render(f.read(), values, "us-east")
            except (KeyError, ValueError) as e:
                failures.append(f"{scenario}: templates/{name}: {e}")
                continue
        docs.extend(d for d in yaml.load_all(text) if d)
    with tempfile.TemporaryDirectory() as tmp:
        for i, doc in enumerate(docs):
            rendered_kinds.add(doc["kind"])
            path = os.path.join(tmp, f"{i}-{doc['kind']}.yaml")
            with open(path, "w") as f:
                YAML().dump(doc, f)
            code, out = tool("kubernetes-validate", "--strict", "--quiet", path)
            if code != 0:
                failures.append(f"{scenario}: {doc['kind']} {doc['metadata']['name']}: {out}")
            spec = doc.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []):
                check_flags(f"{scenario}: {doc['kind']} {doc['metadata']['name']}", daemon_argv(c))
for kind in ["StatefulSet", "PodDisruptionBudget", "Service", "Deployment"]:
    if kind not in rendered_kinds:
        failures.append(f"the chart renders no {kind}")

if failures:
    print("FAILED:\n" + "\n".join(failures), flush=True)
    sys.exit(1)
print("OK", flush=True)
