#!/usr/bin/env python3
"""Helm's own engine (Helm v4's library, `pip install helm-python-sdk`), no helm binary.

    scripts/helm.py lint CHART [VALUES_JSON]              the lint report, as JSON
    scripts/helm.py render CHART NAME NAMESPACE [VALUES_JSON]
                                                          the rendered objects, one YAML
                                                          stream in template order

Used by the tests and by scripts/render-manifests.
"""

import json
import sys

import helm_python as helm


def values(argv, index):
    return json.loads(argv[index]) if len(argv) > index else None


def render(chart_dir, name, namespace, chart_values):
    chart = helm.Chart.load(chart_dir)
    rendered = chart.render(chart_values, name=name, namespace=namespace, is_install=True)
    documents = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for document in rendered[path].split("\n---"):
            lines = [l for l in document.strip("\n").splitlines() if l.strip()]
            if not any(not l.lstrip().startswith("#") and l.strip() != "---" for l in lines):
                continue
            source = path.split("/", 1)[1]
            documents.append(f"# Source: {source}\n" + document.strip("\n").removeprefix("---\n") + "\n")
    return "---\n".join(documents)


def main(argv):
    if len(argv) >= 3 and argv[1] == "lint":
        report = helm.lint(argv[2], values(argv, 3), strict=True)
        print(json.dumps(report, indent=1))
    elif len(argv) >= 5 and argv[1] == "render":
        sys.stdout.write(render(argv[2], argv[3], argv[4], values(argv, 5)))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
