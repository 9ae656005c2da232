"""The evaluation as a Markdown table (printed by ``dicomnode evaluate`` and written as ``evaluation.md``)."""

from __future__ import annotations

from typing import Any

__all__ = ["markdown"]


def _p(d: dict[str, Any]) -> str:
    if not d["trials"]:
        return "n/a"
    lo, hi = d["wilson95"]
    return f"{d['successes']}/{d['trials']} ({100 * d['fraction']:.0f} %, 95 % CI {100 * lo:.0f}-{100 * hi:.0f} %)"


def _v(v: Any, fmt: str = "{}") -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return fmt.format(v)


def markdown(doc: dict[str, Any]) -> str:
    """Per-case rows, the summary with Wilson intervals, and the reliability table."""
    lines = ["| case | profile | status | scene (expected) | p | regions | lesions found | rank of first true "
             "| false findings | Dice | lungs | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in doc["cases"]:
        scene = f"{_v(c['scene_label'])} ({_v(c['scene_expected'])})"
        if c["scene_correct"] is not None:
            scene += " ok" if c["scene_correct"] else " WRONG"
        lesions = f"{c['lesions_found']}/{c['lesions_total']}" if c["lesions_total"] else "-"
        status = c["status"] + (" (expected)" if c["expect_refusal"] and c["status"] == "refused" else "")
        lines.append(f"| {c['id']} | {_v(c['profile'])} | {status} | {scene} | {_v(c['scene_probability'], '{:.2f}')} "
                     f"| {_v(c['regions_agreement'], '{:.2f}')} | {lesions} | {_v(c['first_true_rank'])} "
                     f"| {_v(c['false_findings'])} | {_v(c['dice_best'], '{:.2f}')} | {_v(c['lungs_found'])} "
                     f"| {c['seconds']:.1f} |")
    s = doc["summary"]
    lines += ["", "| summary | value |", "|---|---|",
              f"| scene right | {_p(s['scene_correct'])} |",
              f"| scene wrong with p >= 0.5 | {_p(s['scene_confident_wrong'])} |",
              f"| regions agreement (mean over {s['regions_cases']} series) | {_v(s['regions_agreement_mean'], '{:.2f}')} |",
              f"| lesions found | {_p(s['lesions_found'])} |",
              f"| top finding inside the truth | {_p(s['top_finding_true'])} |",
              f"| series with a true finding (any rank) | {_p(s['series_with_a_true_finding'])} |",
              f"| false findings at the reporting threshold | {s['false_findings_total']} "
              f"({_v(s['false_findings_per_series'])} per series with truth) |",
              f"| series without lesion truth that report a finding (its status unknown) | "
              f"{_p(s['series_without_truth_reporting'])}, {s['findings_reported_without_truth']} finding(s) |",
              f"| Dice of the best finding (mean over {s['dice_cases']} contoured series) | "
              f"{_v(s['dice_best_mean'], '{:.2f}')} |",
              f"| lungs found (CT, truth says chest) | {_p(s['lungs_found'])} |",
              f"| refusals expected and made | {_p(s['refusals_expected_and_made'])} |",
              f"| cases ok / refused / error | {s['status']['ok']} / {s['status']['refused']} / {s['status']['error']} |",
              f"| total chain time | {s['seconds_total']} s |",
              f"| models | {'leave one patient out: refitted ' + (', '.join(s.get('models_refitted') or []) or 'none') + '; in-sample ' + (', '.join(s.get('models_in_sample') or []) or 'none') if doc.get('leave_one_patient_out') else 'as shipped (in-sample where fitted on these cases)'} |",
              "", "| predicted probability | findings | mean predicted | observed fraction true |", "|---|---|---|---|"]
    for b in s["reliability"]:
        lines.append(f"| {b['low']:.2f}-{b['high']:.2f} | {b['count']} | {_v(b['mean_predicted'], '{:.2f}')} "
                     f"| {_p(b['observed'])} |")
    return "\n".join(lines) + "\n"
