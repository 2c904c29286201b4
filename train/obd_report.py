"""The ads (obd) run's numbers as Markdown tables: CTR quality with bootstrap intervals beside
the baselines, the off-policy validation, and the learned ranking's estimated value.

    python -m recdeploy.train.obd_report runs/obd        # the tables docs/ads.md quotes

Reads ``<run>/checkpoint/card.json`` (written by ``recdeploy train --model dcn_v2_context``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ESTIMATORS = ("ips", "snips", "dr", "dm")


def _interval(m: dict, name: str, digits: int = 4) -> str:
    return f"{m[name]:.{digits}f} [{m[f'{name}_low']:.{digits}f}, {m[f'{name}_high']:.{digits}f}]"


def _estimate(e: dict, scale: float = 100.0) -> str:
    """A click rate as a percentage with its interval."""
    return f"{scale * e['value']:.3f}% [{scale * e['low']:.3f}, {scale * e['high']:.3f}]"


def quality_table(card: dict) -> str:
    test = card["metrics"]["test"]
    lines = [f"test: {test['rows']:,} impressions, {test['clicks']} clicks; 95% bootstrap intervals",
             "", "| model | AUC | logloss |", "|---|---|---|",
             f"| {card['model']} | {_interval(test, 'auc')} | {_interval(test, 'logloss')} |"]
    for name, baseline in card.get("baselines", {}).items():
        b = baseline["test"]
        lines.append(f"| {name.replace('_', '-')} | {_interval(b, 'auc')} | {_interval(b, 'logloss')} |")
    return "\n".join(lines)


def validation_table(card: dict) -> str:
    v = card["ope"]["validation"]
    truth = v["truth_on_policy"]
    lines = [f"target: {v['target']}; logs: {v['logs']} ({truth['rows']:,} impressions each)", "",
             "| estimate of the BTS policy's click rate | value [95% CI] | covers the on-policy truth |",
             "|---|---|---|",
             f"| on-policy truth (BTS's own logs) | {_estimate(truth)} | — |",
             f"| random policy, on-policy (for scale) | {_estimate(v['random_on_policy'])} | — |"]
    for name in ESTIMATORS:
        e = v["estimates"][name]
        covers = "yes" if e["covers_truth"] else "no"
        lines.append(f"| {name.upper()} from the random logs | {_estimate(e)} | {covers} |")
    lines += ["", "per campaign (10,000 impressions of each policy):", "",
              "| campaign | on-policy truth | " + " | ".join(n.upper() for n in ESTIMATORS[:3]) + " |",
              "|---|---|" + "---|" * 3]
    for campaign, c in v.get("by_campaign", {}).items():
        cells = " | ".join(_estimate(c["estimates"][n]) + ("" if c["estimates"][n]["covers_truth"] else " (misses)")
                           for n in ESTIMATORS[:3])
        lines.append(f"| {campaign} | {_estimate(c['truth_on_policy'])} | {cells} |")
    return "\n".join(lines)


def policy_table(card: dict) -> str:
    ope = card["ope"]
    lines = [f"logs: {ope['logs']}", "",
             "| policy | matched rows | matched clicks | " + " | ".join(n.upper() for n in ESTIMATORS) + " |",
             "|---|---|---|" + "---|" * len(ESTIMATORS)]
    for name, p in ope["policies"].items():
        cells = " | ".join(_estimate(p["estimates"][n]) for n in ESTIMATORS)
        lines.append(f"| {name}: {p['policy']} | {p['matched_rows']} | {p['matched_clicks']} | {cells} |")
    for name, e in ope["logged"].items():
        lines.append(f"| logged {name} (on-policy, test period) | all | — | {_estimate(e)} | | | |")
    return "\n".join(lines)


def ads_tables(card: dict) -> str:
    return "\n\n".join(["### CTR quality", quality_table(card), "### Off-policy estimators vs on-policy truth",
                        validation_table(card), "### The learned ranking, valued off-policy", policy_table(card)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recdeploy.train.obd_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a dcn_v2_context run folder (holding checkpoint/card.json)")
    args = parser.parse_args(argv)
    path = args.run / "checkpoint" / "card.json"
    if not path.is_file():
        print(f"obd_report: no {path}; train first: recdeploy train --model dcn_v2_context --dataset obd "
              f"--out {args.run}", file=sys.stderr)
        return 2
    card = json.loads(path.read_text())
    if "ope" not in card:
        print(f"obd_report: {path} is not an obd_ctr run (no off-policy report)", file=sys.stderr)
        return 2
    print(ads_tables(card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
