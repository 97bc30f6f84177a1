#!/usr/bin/env python3
"""Cross-checks of deploy/ against the Rust code, for scripts/check-deploy.

    checks.py metrics                 every metric name and label that
                                      alerts.yml, prometheus.yml and the
                                      Grafana dashboard use is one the code
                                      exports; README's catalogue lists
                                      exactly the exported metrics
    checks.py dashboard               the dashboard's JSON shape
    checks.py manifests FILE...       rendered kustomize output: one
                                      Deployment per service running
                                      `corebank serve <service>` on its port,
                                      env var names the code declares,
                                      NetworkPolicies that admit exactly each
                                      service's callers
    checks.py promconfig OUT_DIR      writes prometheus.yml with its
                                      Kubernetes discovery swapped for a
                                      static target (Debian's promtool is
                                      built without Kubernetes discovery) and
                                      alerts.yml beside it, for
                                      `promtool check config`

Prints every problem and exits 1 if there was one.
"""

import json
import os
import re
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
# Labels Prometheus adds to every series (prometheus.yml's relabelling).
TARGET_LABELS = {"job", "instance", "component", "namespace", "pod"}
# Series that come from Prometheus itself, not from the code.
PROMETHEUS_SERIES = {"up": set()}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

problems = []


def problem(text):
    problems.append(text)


# --- the code -------------------------------------------------------------


def rust_sources():
    """Every .rs file of the workspace's crates, tests and builds left out."""
    for top in sorted(os.listdir(ROOT)):
        crate = os.path.join(ROOT, top)
        if top in ("target", "tests") or top.startswith(".") or not os.path.isdir(os.path.join(crate, "src")):
            continue
        for folder, dirs, files in os.walk(os.path.join(crate, "src")):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".rs"):
                    path = os.path.join(folder, name)
                    with open(path, encoding="utf-8") as f:
                        yield os.path.relpath(path, ROOT), f.read()


def call_arguments(text, start):
    """The text between the parenthesis at `start` and its match."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index]
    return text[start + 1 :]


def code_metrics():
    """{name: (type, {labels}, [files])} of every metrics macro call."""
    found = {}
    macro = re.compile(r"\b(?:metrics::)?(counter|gauge|histogram)!\s*\(")
    for path, text in rust_sources():
        for match in macro.finditer(text):
            arguments = call_arguments(text, match.end() - 1)
            name = re.match(r'\s*"([^"]+)"', arguments)
            if not name:
                continue
            labels = set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*=>', arguments))
            kind, known, files = found.get(name.group(1), (match.group(1), set(), []))
            if kind != match.group(1):
                problem(f"{name.group(1)} is a {kind} in one place and a {match.group(1)} in {path}")
            found[name.group(1)] = (kind, known | labels, files + [path])
    return found


def code_env_vars():
    names = set()
    for _, text in rust_sources():
        names.update(re.findall(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"', text))
    return names


def code_services():
    """[(name, port, calls, grpc)] in cli/src/services.rs's order."""
    with open(os.path.join(ROOT, "cli/src/services.rs"), encoding="utf-8") as f:
        listed = re.findall(r"&corebank_([a-z]+)::[A-Za-z]+Service", f.read())
    services = []
    for crate in listed:
        with open(os.path.join(ROOT, crate, "src/lib.rs"), encoding="utf-8") as f:
            text = f.read()
        name = re.search(r'const NAME: &\'static str = "([^"]+)"', text)
        name = name.group(1) if name else crate
        addr = re.search(r'const DEFAULT_ADDR: &\'static str = "([^"]+)"', text)
        calls = re.search(r"const CALLS: &'static \[&'static str\] = &\[(.*?)\];", text, re.S)
        services.append(
            {
                "name": name,
                "crate": crate,
                "port": int(addr.group(1).rsplit(":", 1)[1]) if addr else None,
                "calls": re.findall(r'"([a-z]+)"', calls.group(1)) if calls else [],
                "text": text,
            }
        )
    return services


# --- PromQL ---------------------------------------------------------------

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan"}


def promql_names(expr):
    """(metric names, {metric: matcher labels}, grouping labels) of `expr`."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\[[^\]]*\]", "", text)
    grouping = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", text):
        grouping.update(label.strip() for label in clause.split(",") if label.strip())
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    matchers = {}
    names = []
    for match in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}", text):
        labels = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", match.group(2)))
        if "__name__" in labels:
            problem(f"a selector by __name__ cannot be checked: {expr}")
        if match.group(1) and match.group(1) not in KEYWORDS:
            matchers.setdefault(match.group(1), set()).update(labels)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b[A-Za-z_][A-Za-z0-9_]*\s*\(", "(", text)  # functions
    text = re.sub(r"(?<![A-Za-z_])\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|[smhdwy])?", " ", text)
    for token in re.findall(r"\$?[A-Za-z_:][A-Za-z0-9_:]*", text):
        if token.startswith("$") or token.lower() in KEYWORDS:
            continue
        names.append(token)
    names.extend(name for name in matchers if name not in names)
    return names, matchers, grouping


def check_expr(where, expr, metrics):
    names, matchers, grouping = promql_names(expr)
    if not names:
        problem(f"{where}: no metric found in {expr!r}")
    allowed = set(TARGET_LABELS)
    for name in names:
        labels = resolve(where, name, metrics)
        if labels is None:
            continue
        allowed |= labels
    for name, labels in matchers.items():
        known = resolve(where, name, metrics, quiet=True)
        if known is None:
            continue
        for label in labels - known - TARGET_LABELS:
            problem(f"{where}: {name} has no label {label!r} (it has: {', '.join(sorted(known)) or 'none'})")
    for label in grouping - allowed:
        problem(f"{where}: grouping by {label!r}, a label none of {', '.join(names)} has")


def resolve(where, name, metrics, quiet=False):
    """The labels of series `name`, or None (reported) when the code has none."""
    if name in PROMETHEUS_SERIES:
        return PROMETHEUS_SERIES[name]
    if name in metrics:
        kind, labels, _ = metrics[name]
        if kind == "histogram" and not quiet:
            problem(f"{where}: {name} is a histogram: use {name}_bucket, _sum or _count")
        return labels
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)]
        if name.endswith(suffix) and metrics.get(base, ("",))[0] == "histogram":
            return metrics[base][1] | ({"le"} if suffix == "_bucket" else set())
    if not quiet:
        problem(f"{where}: metric {name} is not exported by the code")
    return None


def check_metrics():
    metrics = code_metrics()
    if len(metrics) < 10:
        problem(f"only {len(metrics)} metrics found in the code: the scan is broken")
    with open(os.path.join(DEPLOY, "prometheus/alerts.yml"), encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    seen = set()
    for group in rules.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            where = f"alerts.yml {name}"
            if name in seen:
                problem(f"{where}: defined twice")
            seen.add(name)
            check_expr(where, rule["expr"], metrics)
            if "alert" in rule:
                for key in ("for",):
                    if key not in rule:
                        problem(f"{where}: no `{key}:`")
                if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                    problem(f"{where}: severity must be critical, warning or info")
                for key in ("summary", "description", "runbook"):
                    if not rule.get("annotations", {}).get(key):
                        problem(f"{where}: no {key} annotation")
    with open(os.path.join(DEPLOY, "grafana/corebank.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            if "expr" in target:
                check_expr(f"dashboard panel {panel.get('title')!r}", target["expr"], metrics)
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and query:
            match = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", query)
            if not match:
                problem(f"dashboard variable {variable['name']}: only label_values(selector, label) is checked: {query}")
                continue
            where = f"dashboard variable {variable['name']}"
            check_expr(where, match.group(1), metrics)
            names, _, _ = promql_names(match.group(1))
            labels = set(TARGET_LABELS)
            for name in names:
                labels |= resolve(where, name, metrics, quiet=True) or set()
            if match.group(2) not in labels:
                problem(f"{where}: {', '.join(names)} has no label {match.group(2)!r}")
    check_catalogue(metrics)
    print(f"metrics: {len(metrics)} exported by the code; {len(seen)} rules and the dashboard use only those")


def check_catalogue(metrics):
    """README's Operations section lists every exported metric, and no other."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = re.search(r"^## Operations\n(.*?)(?=^## )", readme, re.S | re.M)
    if not section:
        problem("README.md has no `## Operations` section")
        return
    listed = {}
    for row in re.findall(r"^\|\s*`([a-z_:]+)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|", section.group(1), re.M):
        listed[row[0]] = (row[1], set(re.findall(r"`([a-z_]+)`", row[2])))
    for name, (kind, labels, files) in sorted(metrics.items()):
        if name not in listed:
            problem(f"README.md Operations: metric {name} ({kind}, {files[0]}) is missing from the catalogue")
            continue
        if listed[name][0] != kind:
            problem(f"README.md Operations: {name} is a {kind}, the catalogue says {listed[name][0]}")
        if listed[name][1] != labels:
            problem(
                f"README.md Operations: {name} has labels {sorted(labels)}, the catalogue says {sorted(listed[name][1])}"
            )
    for name in sorted(set(listed) - set(metrics)):
        problem(f"README.md Operations: the catalogue lists {name}, which the code does not export")


# --- the dashboard --------------------------------------------------------


def all_panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def check_dashboard():
    with open(os.path.join(DEPLOY, "grafana/corebank.json"), encoding="utf-8") as f:
        dashboard = json.load(f)
    if not isinstance(dashboard.get("schemaVersion"), int) or dashboard["schemaVersion"] < 36:
        problem("dashboard: schemaVersion missing or older than 36")
    for key in ("title", "uid", "panels", "templating"):
        if key not in dashboard:
            problem(f"dashboard: no {key}")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    source = variables.get("datasource")
    if not source or source.get("type") != "datasource" or source.get("query") != "prometheus":
        problem("dashboard: no Prometheus datasource variable named `datasource`")
    ids = set()
    rows = 0
    for panel in all_panels(dashboard):
        if panel.get("id") in ids:
            problem(f"dashboard: panel id {panel.get('id')} used twice")
        ids.add(panel.get("id"))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y")) or grid.get("x", 0) + grid.get("w", 0) > 24:
            problem(f"dashboard: panel {panel.get('title')!r} has a bad gridPos {grid}")
        if panel.get("type") == "row":
            rows += 1
            continue
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                problem(f"dashboard: panel {panel.get('title')!r} does not use the datasource variable")
            if not target.get("expr"):
                problem(f"dashboard: panel {panel.get('title')!r} has a target without expr")
    print(f"dashboard: {len(ids)} panels in {rows} rows, schemaVersion {dashboard.get('schemaVersion')}")


# --- rendered manifests ---------------------------------------------------


def check_manifests(paths):
    env_vars = code_env_vars()
    services = code_services()
    for path in paths:
        with open(path, encoding="utf-8") as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        check_rendering(os.path.basename(path), documents, services, env_vars)


def check_rendering(label, documents, services, env_vars):
    by_kind = {}
    for document in documents:
        by_kind.setdefault(document["kind"], {})[document["metadata"]["name"]] = document
    config_maps = by_kind.get("ConfigMap", {})
    secrets = by_kind.get("Secret", {})
    deployments = by_kind.get("Deployment", {})
    policies = by_kind.get("NetworkPolicy", {})

    def env_names(pod_spec, where):
        for container in pod_spec.get("containers", []):
            for source in container.get("envFrom", []):
                for kind, store, key in (("ConfigMap", config_maps, "configMapRef"), ("Secret", secrets, "secretRef")):
                    if key in source:
                        name = source[key]["name"]
                        if name not in store:
                            problem(f"{label}: {where} reads {kind} {name}, which is not rendered")
                            continue
                        data = dict(store[name].get("data", {}))
                        data.update(store[name].get("stringData", {}))
                        yield from ((variable, f"{kind} {name}") for variable in data)
            for variable in container.get("env", []):
                yield variable["name"], where
                reference = variable.get("valueFrom", {})
                for kind, store, key in (("ConfigMap", config_maps, "configMapKeyRef"), ("Secret", secrets, "secretKeyRef")):
                    if key in reference and not reference[key].get("optional"):
                        if reference[key]["name"] not in store:
                            problem(f"{label}: {where} env {variable['name']} reads {kind} {reference[key]['name']}, which is not rendered")

    for service in services:
        name = service["name"]
        deployment = deployments.get(f"corebank-{name}")
        if not deployment:
            problem(f"{label}: no Deployment corebank-{name} for service {name}")
            continue
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        where = f"Deployment corebank-{name}"
        if container.get("command", []) + container.get("args", []) != ["corebank", "serve", name]:
            problem(f"{label}: {where} does not run `corebank serve {name}`")
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        own = "http" if name == "gateway" else "grpc"
        if ports.get(own) != service["port"]:
            problem(f"{label}: {where} port {own} is {ports.get(own)}, the code's default is {service['port']}")
        if "metrics" not in ports:
            problem(f"{label}: {where} has no metrics port")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            spec = container.get(probe)
            if not spec:
                problem(f"{label}: {where} has no {probe}")
            elif name == "gateway":
                path = spec.get("httpGet", {}).get("path")
                if not path or f'.route("{path}"' not in service["text"]:
                    problem(f"{label}: {where} {probe} is not an HTTP route of gateway/src/lib.rs")
            elif spec.get("grpc", {}).get("port") != service["port"]:
                problem(f"{label}: {where} {probe} is not a grpc probe on {service['port']}")
        for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
            if f"corebank-{name}" not in by_kind.get(kind, {}):
                problem(f"{label}: no {kind} corebank-{name}")
        addr_var = f"COREBANK_{name.upper()}_ADDR"
        settings = {}
        for config_map in config_maps.values():
            settings.update(config_map.get("data", {}))
        if not settings.get(addr_var, "").endswith(f":{service['port']}"):
            problem(f"{label}: ConfigMap {addr_var} is {settings.get(addr_var)!r}, not on port {service['port']}")
        if name != "gateway":
            policy = policies.get(f"corebank-{name}-ingress")
            callers = sorted(s["name"] for s in services if name in s["calls"])
            if not policy:
                problem(f"{label}: no NetworkPolicy corebank-{name}-ingress")
                continue
            admitted = sorted(
                peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
                for rule in policy["spec"].get("ingress", [])
                for peer in rule.get("from", [])
                if "app.kubernetes.io/component" in peer.get("podSelector", {}).get("matchLabels", {})
                and "namespaceSelector" not in peer
            )
            if admitted != callers:
                problem(f"{label}: NetworkPolicy corebank-{name}-ingress admits {admitted}, the code's callers are {callers}")
            if any("ipBlock" in peer or "namespaceSelector" in peer for rule in policy["spec"].get("ingress", []) for peer in rule.get("from", [])):
                problem(f"{label}: NetworkPolicy corebank-{name}-ingress admits traffic from outside the namespace")

    if "corebank-default-deny-ingress" not in policies:
        problem(f"{label}: no default-deny NetworkPolicy")
    job = by_kind.get("Job", {}).get("corebank-migrate")
    if not job or job["spec"]["template"]["spec"]["containers"][0].get("args") != ["migrate"]:
        problem(f"{label}: no Job corebank-migrate running `corebank migrate`")
    for kind, items in by_kind.items():
        for name, document in items.items():
            spec = document.get("spec", {}).get("template", {}).get("spec")
            if not spec:
                continue
            for variable, source in env_names(spec, f"{kind} {name}"):
                if variable not in env_vars and variable != "HOME":
                    problem(f"{label}: {source} sets {variable}, which no flag of the code reads")
    print(f"manifests {label}: {len(documents)} objects, {len(deployments)} Deployments checked against the code")


# --- prometheus.yml -------------------------------------------------------


def write_promconfig(out_dir):
    with open(os.path.join(DEPLOY, "prometheus/prometheus.yml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    for job in config.get("scrape_configs", []):
        if job.pop("kubernetes_sd_configs", None) is not None:
            job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:9090"]})
    with open(os.path.join(out_dir, "prometheus.yml"), "w", encoding="utf-8") as f:
        yaml.safe_dump(config, f)
    with open(os.path.join(DEPLOY, "prometheus/alerts.yml"), encoding="utf-8") as source:
        with open(os.path.join(out_dir, "alerts.yml"), "w", encoding="utf-8") as f:
            f.write(source.read())


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "metrics":
        check_metrics()
    elif command == "dashboard":
        check_dashboard()
    elif command == "manifests":
        check_manifests(rest)
    elif command == "promconfig":
        write_promconfig(rest[0])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for text in problems:
        print(f"  {text}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
