"""`inceptionnext list`: the zoo as a table (names, params, MACs, pretrained tags, the paper's top-1).

inceptionnext list
inceptionnext list 'inceptionnext_*' --pretrained --json
inceptionnext list --task segmentation 'fpn_*'
"""

import argparse
import fnmatch
import json
from typing import Any, Dict, List

import timm

from ..models.complexity import count_params_and_macs
from ..models.dense import DENSE_MODELS, list_dense_models
from ..models.zoo import ZOO, ZooEntry
from ..utils.tables import text_table
from .common import reports_errors, summary


def describe(entry: ZooEntry) -> Dict[str, Any]:
    """One zoo entry as counted here: params and MACs at its pretrained input size, tags, paper figures."""
    params, macs = count_params_and_macs(entry.name)
    input_size = timm.models.get_pretrained_cfg(entry.name).input_size
    tags = sorted({t.split(".", 1)[1] for n in entry.names for t in timm.list_pretrained(f"{n}.*")})
    return dict(
        name=entry.name,
        alias=entry.alias,
        family=entry.family,
        params_m=round(params / 1e6, 2),
        macs_g=round(macs / 1e9, 2),
        input_size=list(input_size),
        pretrained_tags=tags,
        paper_top1=entry.paper.get("top1"),
        timm_name=entry.timm_name,
    )


def select(patterns: List[str], pretrained_only: bool) -> List[ZooEntry]:
    chosen = [e for e in ZOO if not patterns or any(fnmatch.fnmatch(n, p) for p in patterns for n in e.names)]
    if pretrained_only:
        chosen = [e for e in chosen if any(timm.list_pretrained(f"{n}.*") for n in e.names)]
    return chosen


def dense_models(task: str) -> List[Dict[str, Any]]:
    """The segmentation or detection models: each name with its head and zoo backbone (no counting: they are many)."""
    return [dict(name=n, head=DENSE_MODELS[n].head, backbone=DENSE_MODELS[n].backbone) for n in list_dense_models(task)]


def format_table(rows: List[Dict[str, Any]]) -> str:
    header = ("name", "alias", "params (M)", "MACs (G)", "input", "pretrained", "paper top-1")
    body = [
        (
            r["name"],
            r["alias"] or "-",
            f"{r['params_m']:.2f}",
            f"{r['macs_g']:.2f}",
            "x".join(map(str, r["input_size"][1:])),
            ",".join(r["pretrained_tags"]) or "-",
            f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "-",
        )
        for r in rows
    ]
    return text_table(header, body)


@reports_errors()
def cli(argv=None, prog: str = "inceptionnext list") -> int:
    p = argparse.ArgumentParser(prog=prog, description=summary(__doc__))
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="shell-style name filters, e.g. 'inceptionnext_*'")
    p.add_argument("--pretrained", action="store_true", help="only models with pretrained weights")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--task",
        choices=("classification", "segmentation", "detection"),
        default="classification",
        help="which models: the classifiers (default), or the segmentation or detection models on them",
    )
    a = p.parse_args(argv)
    if a.task != "classification":
        rows = [
            r
            for r in dense_models(a.task)
            if not a.patterns or any(fnmatch.fnmatch(r["name"], pat) for pat in a.patterns)
        ]
        if not rows:
            raise ValueError(f"no {a.task} model matches {' '.join(a.patterns)}")
        width = max(len(r["name"]) for r in rows)
        print(
            json.dumps(rows, indent=2)
            if a.json
            else "\n".join(f"{r['name']:<{width}}  {r['head']:<10}  {r['backbone']}" for r in rows)
        )
        return 0
    entries = select(a.patterns, a.pretrained)
    if not entries:
        raise ValueError(f"no model matches {' '.join(a.patterns)}; names: {', '.join(e.name for e in ZOO)}")
    rows = [describe(e) for e in entries]
    print(json.dumps(rows, indent=2) if a.json else format_table(rows))
    return 0
