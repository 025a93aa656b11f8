"""The launch proposal: what a campaign improved, with what evidence, at what cost.

A pure function of the campaign's state (its plan, hypotheses, every concluded job and the
result), so it can be rendered again at any time and always says the same thing. It comes
as Markdown (images as separate PNG files) and as one self-contained HTML page (images
inlined), with three plots: test NE of every job over the compute spent, each hypothesis'
effect on validation NE (the confirmed winner with its interval), and the budget burn. Every
mean over seeds comes with its per-seed values, and the winner's model size and inference cost
with the baseline's: a ranking engineer ships what serves.
"""

from __future__ import annotations

import base64
import html
import statistics
from dataclasses import dataclass, field
from typing import Any

from rea import plots
from rea.events import CampaignResult, JobRecord
from rea.kernels import KernelUse
from rea.phases import COMBINATION, CONFIRMATION, EXPLOITATION, SCREENING, SELECTION, VALIDATION, kind
from rea.workloads import ModelFootprint, get_workload
from rea_planner.campaign import BudgetChange, Campaign, spent, spent_gpu
from rea_planner.combination import extension_effects, pruning_effects
from rea_planner.exploitation import (
    GLOBAL_STARTUP_TRIALS,
    MIN_GLOBAL_STARTUP_TRIALS,
    MIN_SCOPE_SHARE,
    scope_of,
)
from rea_planner.jobs import GLOBAL_TRIAL, TRIAL, still_dropped

NO_FINDINGS = "Its diagnostics pointed to nothing in particular (or it was not diagnosed)."
PHASE_COLOURS: dict[str, str] = {
    SCREENING: "tab:olive",
    VALIDATION: "tab:blue",
    COMBINATION: "tab:purple",
    EXPLOITATION: "tab:cyan",
    SELECTION: "tab:brown",
    CONFIRMATION: "tab:orange",
}


@dataclass(frozen=True)
class Proposal:
    campaign_id: str
    markdown: str
    html: str
    images: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG


def render_proposal(campaign: Campaign) -> Proposal:
    """The proposal of a completed campaign (raises ValueError for one without a result)."""
    result = campaign.result
    if result is None or campaign.spec is None:
        raise ValueError(f"campaign {campaign.campaign_id} has no result to propose")
    jobs = campaign.records
    images = {
        "ne_over_budget.png": _ne_over_budget(jobs, result),
        "hypothesis_effects.png": _hypothesis_effects(jobs, result),
        "budget_burn.png": _budget_burn(jobs, campaign.budget_cpu_seconds()),
    }
    sections = _sections(campaign, result)
    markdown = _markdown(campaign, sections)
    page = _html(campaign, sections, images)
    return Proposal(campaign.campaign_id, markdown, page, images)


# ---- content ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sections:
    headline: str
    summary: list[list[str]]
    per_seed: list[list[str]]
    changes: list[list[str]]
    footprint: list[list[str]]
    footprint_note: str
    notes: list[str]
    carried: list[str]
    interactions: list[list[str]]
    extensions: list[list[str]]
    removals: list[list[str]]
    hypotheses: list[list[str]]
    evidence: list[list[str]]
    cost: str
    findings: list[str]
    budget: list[list[str]]


def _sections(campaign: Campaign, result: CampaignResult) -> Sections:
    assert campaign.spec is not None
    base, best = result.baseline, result.best
    if result.ne_delta_low is None:
        interval = f"no interval ({result.verdict})"
    else:
        interval = (
            f"{result.confidence:.0%} CI [{result.ne_delta_low:+.4f}, {result.ne_delta_high:+.4f}], "
            f"p = {result.p_value:.3g}"
        )
    winner = best.hypothesis_id or "the baseline"
    headline = (
        f"{winner}: test NE {base.ne:.4f} -> {best.ne:.4f} ({result.ne_relative_gain:+.2%}) over "
        f"{result.seeds} seed(s); {interval}; verdict: {result.verdict}."
    )
    if campaign.status == "cancelled":
        headline = f"CANCELLED by {campaign.cancelled_by}: what it found before it was stopped. {headline}"
    summary = [
        ["NE (lower is better)", f"{base.ne:.4f}", f"{best.ne:.4f}", f"{result.ne_delta:+.4f}"],
        ["AUC", f"{base.auc:.4f}", f"{best.auc:.4f}", f"{result.auc_delta:+.4f}"],
        ["validation NE", f"{base.validation_ne:.4f}", f"{best.validation_ne:.4f}",
         f"{best.validation_ne - base.validation_ne:+.4f}"],
    ]  # fmt: skip
    # The requested baseline: the winner's changes are told against it, even when the runbook had
    # to adjust the baseline's own run (the notes then say so).
    recorded = next((j.config for j in campaign.records if j.job_id == base.job_id), campaign.spec.baseline)
    requested = get_workload(campaign.spec.workload).schema.resolve(campaign.spec.baseline)
    baseline_config = {**recorded, **{knob: requested.get(knob) for knob in result.baseline_changes}}
    changes = [
        [knob, _show(baseline_config.get(knob)), _show(value)] for knob, value in result.best_changes.items()
    ]
    footprint, footprint_note = _footprint(campaign.records, result)
    baseline_val = base.validation_ne
    measured = {
        j.hypothesis_id: j.validation.ne - baseline_val
        for j in campaign.records
        if kind(j.phase) == VALIDATION and j.status == "completed" and j.validation and j.hypothesis_id
    }
    hypotheses = [
        [
            h.id,
            h.source,
            h.title,
            f"{h.expected_gain:.1%}",
            f"{measured[h.id]:+.4f}" if h.id in measured else "not run",
            h.citation,
        ]
        for h in campaign.hypotheses
    ]
    evidence = [
        [
            j.job_id.removeprefix(f"{campaign.campaign_id}-"),
            j.phase,
            j.hypothesis_id or "baseline",
            config_diff(j.config, baseline_config),
            str(j.seed),
            j.status,
            f"{j.validation.ne:.4f}" if j.validation else "",
            f"{j.test.ne:.4f}" if j.test else "",
            f"{j.cost.cpu_seconds:.1f}" if j.cost else "",
        ]
        for j in campaign.records
    ]
    cost = (
        f"{result.compute_seconds:.1f} CPU-s of the {campaign.budget_cpu_seconds():g} CPU-s budget "
        f"({result.jobs_completed} jobs completed, {result.jobs_failed} failed)."
    )
    gpu_budget = campaign.budget_gpu_seconds()
    gpu_spent = spent_gpu(campaign.records)
    if gpu_budget is not None or gpu_spent:
        of_budget = f" of the {gpu_budget:g} GPU-s budget" if gpu_budget is not None else " (not capped)"
        cost += f" {gpu_spent:.1f} GPU-s{of_budget}: the jobs' wall time times the GPUs each held."
    if campaign.budget_changes:
        history = "; ".join(
            f"{_added(change)} by {change.by} at {change.at:%Y-%m-%d %H:%M} UTC ({change.reason})"
            for change in campaign.budget_changes
        )
        asked = f"{campaign.spec.budget_cpu_seconds:g} CPU-s"
        if campaign.spec.budget_gpu_seconds is not None:
            asked += f" and {campaign.spec.budget_gpu_seconds:g} GPU-s"
        cost += f" Budget history: {asked} requested; {history}."
    dropped = still_dropped(campaign.dropped_hypotheses, [j.hypothesis_id for j in campaign.records])
    notes = [*result.notes, *(f"dropped: {d}" for d in dropped)]
    return Sections(
        headline,
        summary,
        _per_seed(result),
        changes,
        footprint,
        footprint_note,
        notes,
        _carried(campaign, result),
        _interactions(result),
        _extensions(campaign.records),
        _removals(campaign.records),
        hypotheses,
        evidence,
        cost,
        campaign.findings,
        budget_spent(campaign),
    )


def _added(change: BudgetChange) -> str:
    """ "+200 CPU-s", "+600 GPU-s" or both."""
    parts = [f"{change.cpu_seconds:+g} CPU-s"] if change.cpu_seconds or not change.gpu_seconds else []
    parts += [f"{change.gpu_seconds:+g} GPU-s"] if change.gpu_seconds else []
    return " ".join(parts)


def budget_spent(campaign: Campaign) -> list[list[str]]:
    """Where the budget went: per stage (exploitation split by scope), its jobs, CPU seconds,
    share of what was spent, the best validation NE it reached, and the rule that gave it that."""
    assert campaign.spec is not None
    spec = campaign.spec
    stages: dict[str, list[JobRecord]] = {}
    for job in campaign.records:
        stage = kind(job.phase)
        if stage == EXPLOITATION:
            stage += " (whole space)" if scope_of(job.hypothesis_id) == "global" else " (trust region)"
        stages.setdefault(stage, []).append(job)
    rounds = {stage: len({j.phase for j in jobs}) for stage, jobs in stages.items()}
    exploited = (
        f"the whole space's random start-up first ({MIN_GLOBAL_STARTUP_TRIALS} to {GLOBAL_STARTUP_TRIALS} "
        "trials, a quarter of what exploitation affords), then each round to the scope "
        "whose last rounds lowered the best validation NE more per CPU-s, neither given less than "
        f"{MIN_SCOPE_SHARE:.0%} of the CPU"
        if spec.exploitation_scope == "auto"
        else f"exploitation_scope is {spec.exploitation_scope}"
    )
    why: dict[str, str] = {
        SCREENING: "every hypothesis at low fidelity; the best third promoted",
        VALIDATION: f"each hypothesis once, best prior first, within {spec.validation_share:.0%} of it",
        COMBINATION: "the winners stacked, then extended and pruned while that found a better config",
        SELECTION: f"the best {spec.contenders} configs on {spec.selection_seeds} more seed(s): best mean",
        CONFIRMATION: "the winner and the baseline on more seeds, on the test split",
    }
    total = spent(campaign.records) or 1.0
    rows = []
    for stage, jobs in stages.items():
        cpu = spent(jobs)
        nes = [j.validation.ne for j in jobs if j.status == "completed" and j.validation]
        searched = stage.split(" ")[0] in (VALIDATION, COMBINATION, EXPLOITATION)
        rule = why.get(stage, f"{rounds[stage]} round(s): {exploited}")
        rows.append(
            [
                stage,
                str(len(jobs)),
                f"{cpu:.1f}",
                f"{cpu / total:.0%}",
                f"{min(nes):.4f}" if nes and searched else "",
                rule,
            ]
        )
    return rows


def config_diff(config: dict[str, Any], baseline: dict[str, Any]) -> str:
    """The knobs a job set differently from the baseline, "knob=value, ..." sorted by knob: what
    the job actually tried, which its hypothesis id only names."""
    if not config:
        return "(no config recorded)"
    changed = sorted(
        knob for knob in config.keys() | baseline.keys() if config.get(knob) != baseline.get(knob)
    )
    return ", ".join(f"{knob}={_show(config.get(knob))}" for knob in changed) or "(baseline config)"


def _per_seed(result: CampaignResult) -> list[list[str]]:
    """Seed -> baseline, best and their difference on the test split: what the headline's means
    and interval are made of, so one outlier seed shows."""
    base, best = result.baseline.ne_by_seed, result.best.ne_by_seed
    rows = []
    for seed in sorted(base.keys() | best.keys()):
        b, w = base.get(seed), best.get(seed)
        delta = f"{w - b:+.4f}" if b is not None and w is not None else ""
        rows.append([str(seed), _ne(b), _ne(w), delta])
    return rows


def _ne(value: float | None) -> str:
    return "not run" if value is None else f"{value:.4f}"


def _footprint(records: list[JobRecord], result: CampaignResult) -> tuple[list[list[str]], str]:
    """Baseline vs winner: parameters, size and inference cost, with the relative change; the
    inference time is the median over every run of the config (it varies run to run, the
    size does not). Empty rows when neither config's jobs reported a footprint."""
    base = _footprints(records, result.baseline.job_id)
    best = _footprints(records, result.best.job_id)
    if not base and not best:
        return [], "Not measured: the workload reported no model footprint."

    def row(name: str, values: list[list[float]], show: str) -> list[str]:
        b, w = (statistics.median(v) if v else None for v in values)
        change = f"{(w - b) / b:+.1%}" if b and w is not None else ""
        return [name, *("not measured" if v is None else show.format(v) for v in (b, w)), change]

    rows = [
        row("parameters", [[f.parameters for f in base], [f.parameters for f in best]], "{:,.0f}"),
        row(
            "size (MiB, parameters and buffers)",
            [[f.size_mb for f in base], [f.size_mb for f in best]],
            "{:.3f}",
        ),
        row(
            "inference (ms per 1,000 test rows)",
            [[f.inference_ms_per_1k_rows for f in base], [f.inference_ms_per_1k_rows for f in best]],
            "{:.3f}",
        ),
    ]
    note = (
        f"Inference: forward pass on the test split in eval mode, as the workload measured it after "
        f"training (the reference trainer: one thread per job); median over {len(base)} baseline and "
        f"{len(best)} winner run(s)."
    )
    winner = next((j for j in records if j.job_id == result.best.job_id), None)
    if winner is not None and winner.kernels:
        note += " " + kernel_note(winner.kernels)
    return rows, note


def kernel_note(uses: list[KernelUse]) -> str:
    """What evolved kernels the winner ran in evaluation and inference, in words."""
    ran = sorted({f"{use.operator} ({use.bucket})" for use in uses if use.kernel is not None and use.calls})
    pytorch = sorted({use.operator for use in uses if use.kernel is None and use.calls})
    text = f"Evolved kernels ran for {', '.join(ran)}." if ran else "No evolved kernel ran."
    if pytorch:
        text += f" PyTorch ran the calls of {', '.join(pytorch)} that had no faster registry kernel."
    return text


def _footprints(records: list[JobRecord], job_id: str) -> list[ModelFootprint]:
    """The footprints of every completed run of the config job ``job_id`` ran (any seed, phase)."""
    job = next((j for j in records if j.job_id == job_id), None)
    if job is None:
        return []
    return [
        j.footprint for j in records if j.status == "completed" and j.config == job.config and j.footprint
    ]


def _carried(campaign: Campaign, result: CampaignResult) -> list[str]:
    """What the winning config is made of, in words, with the feature-interaction ones called out."""
    known = {h.id: h for h in campaign.hypotheses}
    carried = [known[name] for name in result.best_hypotheses if name in known]
    lines = [f"{h.id}: {h.title} ({h.technique}; source: {h.source}). {h.rationale}" for h in carried]
    crosses = [h.id for h in carried if "interactions" in h.signals]
    if crosses:
        lines.append(
            "The winning configuration includes feature-interaction (cross) technique(s): "
            f"{', '.join(crosses)}."
        )
    if result.best.hypothesis_id and GLOBAL_TRIAL in result.best.hypothesis_id:
        lines.append(
            "It was then found by the exploitation phase's search of every knob (Optuna TPE, told every "
            "job the campaign ran)."
        )
    elif result.best.hypothesis_id and TRIAL in result.best.hypothesis_id:
        lines.append("Its continuous knobs were then tuned by the exploitation phase (Optuna TPE).")
    return lines


def _interactions(result: CampaignResult) -> list[list[str]]:
    return [
        [
            " + ".join(i.pair),
            f"{i.effects[0]:+.4f}",
            f"{i.effects[1]:+.4f}",
            f"{i.expected:+.4f}",
            f"{i.observed:+.4f}",
            f"±{i.tolerance:.4f}",
            i.kind,
        ]
        for i in result.interactions
    ]


def _extensions(records: list[JobRecord]) -> list[list[str]]:
    rows = []
    for e in extension_effects(records):
        if e.alone is not None and (e.effect < 0) != (e.alone < 0):
            note = "helps here, hurt the baseline" if e.effect < 0 else "hurts here, helped the baseline"
        else:
            note = ""
        alone = "not validated" if e.alone is None else f"{e.alone:+.4f}"
        rows.append([e.hypothesis, e.onto, f"{e.effect:+.4f}", alone, note])
    return rows


def _removals(records: list[JobRecord]) -> list[list[str]]:
    rows = []
    for r in pruning_effects(records):
        if r.effect < 0:
            note = (
                "better without it, though it helped the baseline"
                if r.alone and r.alone < 0
                else "better without it"
            )
        else:
            note = ""
        alone = "not validated" if r.alone is None else f"{r.alone:+.4f}"
        rows.append([r.hypothesis, r.of, f"{r.effect:+.4f}", alone, note])
    return rows


def _show(value: Any) -> str:
    return "(default)" if value is None else str(value)


SUMMARY_HEAD = ["metric (test split unless noted)", "baseline", "best", "delta"]
PER_SEED_TITLE = "Test NE per seed (the values behind the means and the interval)"
PER_SEED_HEAD = ["seed", "baseline NE", "best NE", "delta"]
NO_PER_SEED = "Per-seed values were not recorded."
FOOTPRINT_TITLE = "Model size and inference cost"
FOOTPRINT_HEAD = ["measure", "baseline", "winner", "relative change"]
CHANGES_HEAD = ["knob", "baseline", "proposed"]
EXTENSIONS_HEAD = ["hypothesis", "added to", "effect there", "effect on the baseline", "note"]
NO_EXTENSIONS = "No extension round ran."
REMOVALS_HEAD = ["hypothesis", "taken out of", "effect of taking it out", "effect on the baseline", "note"]
NO_REMOVALS = "No pruning round ran."
INTERACTIONS_HEAD = ["pair", "effect A", "effect B", "sum (additive)", "observed", "tolerance", "interaction"]
HYPOTHESES_HEAD = ["hypothesis", "source", "title", "expected gain", "validation NE delta", "citation"]
BUDGET_HEAD = ["stage", "jobs", "CPU-s", "share", "best validation NE", "why it got this"]
EVIDENCE_HEAD = [
    "job",
    "phase",
    "hypothesis",
    "config vs baseline",
    "seed",
    "status",
    "val NE",
    "test NE",
    "CPU-s",
]
IMAGES = [
    ("ne_over_budget.png", "Test NE of every job over the compute spent"),
    ("hypothesis_effects.png", "Each hypothesis' and combination's effect on NE (negative is better)"),
    ("budget_burn.png", "Budget burn"),
]


def _markdown(campaign: Campaign, s: Sections) -> str:
    def table(head: list[str], rows: list[list[str]]) -> str:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
        return "\n".join(lines)

    name = campaign.spec.name if campaign.spec else campaign.campaign_id
    parts = [
        f"# Launch proposal: {name}",
        f"Campaign `{campaign.campaign_id}`. {s.headline}",
        table(SUMMARY_HEAD, s.summary),
        f"## {PER_SEED_TITLE}",
        table(PER_SEED_HEAD, s.per_seed) if s.per_seed else NO_PER_SEED,
        "## Proposed change",
        table(CHANGES_HEAD, s.changes) if s.changes else "No change: nothing beat the baseline.",
        *(f"- {note}" for note in s.notes),
        f"## {FOOTPRINT_TITLE}",
        *([table(FOOTPRINT_HEAD, s.footprint)] if s.footprint else []),
        s.footprint_note,
        "## What the winning configuration carries",
        "\n".join(f"- {line}" for line in s.carried) if s.carried else "The baseline's own configuration.",
        "## Interactions between winning hypotheses (validation NE deltas)",
        table(INTERACTIONS_HEAD, s.interactions) if s.interactions else "No pair was combined.",
        "## Hypotheses added to the best configuration (extension rounds, validation NE deltas)",
        table(EXTENSIONS_HEAD, s.extensions) if s.extensions else NO_EXTENSIONS,
        "## Hypotheses taken out of the best configuration (pruning rounds, validation NE deltas)",
        table(REMOVALS_HEAD, s.removals) if s.removals else NO_REMOVALS,
        "## Plots",
        *(f"![{alt}]({file})" for file, alt in IMAGES),
        "## What the baseline run showed",
        "\n".join(f"- {line}" for line in s.findings) if s.findings else NO_FINDINGS,
        "## Hypotheses",
        table(HYPOTHESES_HEAD, s.hypotheses),
        "## Evidence: every job",
        table(EVIDENCE_HEAD, s.evidence),
        "## Compute",
        s.cost,
        table(BUDGET_HEAD, s.budget),
    ]
    return "\n\n".join(parts) + "\n"


def _html(campaign: Campaign, s: Sections, images: dict[str, bytes]) -> str:
    def table(head: list[str], rows: list[list[str]]) -> str:
        header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"

    def image(file: str, alt: str) -> str:
        data = base64.b64encode(images[file]).decode()
        caption = html.escape(alt)
        return (
            f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    name = html.escape(campaign.spec.name if campaign.spec else campaign.campaign_id)
    changes = table(CHANGES_HEAD, s.changes) if s.changes else "<p>No change: nothing beat the baseline.</p>"
    notes = "".join(f"<li>{html.escape(note)}</li>" for note in s.notes)
    per_seed = table(PER_SEED_HEAD, s.per_seed) if s.per_seed else f"<p>{NO_PER_SEED}</p>"
    footprint = table(FOOTPRINT_HEAD, s.footprint) if s.footprint else ""
    carried = "".join(f"<li>{html.escape(line)}</li>" for line in s.carried) or "<li>The baseline's own.</li>"
    interactions = (
        table(INTERACTIONS_HEAD, s.interactions) if s.interactions else "<p>No pair was combined.</p>"
    )
    extensions = table(EXTENSIONS_HEAD, s.extensions) if s.extensions else f"<p>{NO_EXTENSIONS}</p>"
    removals = table(REMOVALS_HEAD, s.removals) if s.removals else f"<p>{NO_REMOVALS}</p>"
    findings = "".join(f"<li>{html.escape(line)}</li>" for line in s.findings or [NO_FINDINGS])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Launch proposal: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }}
th {{ background: #f3f3f3; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
.headline {{ font-size: 1.1em; background: #eef6ee; padding: 0.6em; }}
</style></head>
<body>
<h1>Launch proposal: {name}</h1>
<p>Campaign <code>{html.escape(campaign.campaign_id)}</code></p>
<p class="headline">{html.escape(s.headline)}</p>
{table(SUMMARY_HEAD, s.summary)}
<h2>{PER_SEED_TITLE}</h2>
{per_seed}
<h2>Proposed change</h2>
{changes}
<ul>{notes}</ul>
<h2>{FOOTPRINT_TITLE}</h2>
{footprint}
<p>{html.escape(s.footprint_note)}</p>
<h2>What the winning configuration carries</h2>
<ul>{carried}</ul>
<h2>Interactions between winning hypotheses (validation NE deltas)</h2>
{interactions}
<h2>Hypotheses added to the best configuration (extension rounds, validation NE deltas)</h2>
{extensions}
<h2>Hypotheses taken out of the best configuration (pruning rounds, validation NE deltas)</h2>
{removals}
<h2>Plots</h2>
{"".join(image(file, alt) for file, alt in IMAGES)}
<h2>What the baseline run showed</h2>
<ul>{findings}</ul>
<h2>Hypotheses</h2>
{table(HYPOTHESES_HEAD, s.hypotheses)}
<h2>Evidence: every job</h2>
{table(EVIDENCE_HEAD, s.evidence)}
<h2>Compute</h2>
<p>{html.escape(s.cost)}</p>
{table(BUDGET_HEAD, s.budget)}
</body></html>
"""


# ---- plots ------------------------------------------------------------------------------


def _ne_over_budget(jobs: list[JobRecord], result: CampaignResult) -> bytes:
    figure, axes = plots.figure(7, 4)
    spent = 0.0
    best = float("inf")
    frontier: list[tuple[float, float]] = []
    for job in jobs:
        spent += job.cost.cpu_seconds if job.cost else 0.0
        if job.status != "completed" or job.test is None:
            continue
        colour = PHASE_COLOURS.get(kind(job.phase), "tab:gray")
        marker = "s" if job.hypothesis_id is None else "o"
        axes.scatter(spent, job.test.ne, color=colour, marker=marker, s=30, zorder=3)
        remeasured = kind(job.phase) in (SELECTION, CONFIRMATION)
        if not remeasured and job.validation is not None and job.validation.ne < best:
            best = job.validation.ne
            frontier.append((spent, job.test.ne))
    if frontier:
        xs, ys = zip(*frontier, strict=True)
        axes.step(xs, ys, where="post", color="tab:green", label="best so far (picked on validation NE)")
    axes.axhline(result.baseline.ne, color="gray", linestyle="--", label="baseline, mean over seeds")
    for phase, colour in PHASE_COLOURS.items():
        axes.scatter([], [], color=colour, label=f"{phase} job")
    axes.set_xlabel("CPU seconds spent")
    axes.set_ylabel("test NE")
    axes.legend(fontsize=8)
    return plots.png(figure)


def _hypothesis_effects(jobs: list[JobRecord], result: CampaignResult) -> bytes:
    baseline = result.baseline.validation_ne
    effects = sorted(
        (j.validation.ne - baseline, j.hypothesis_id or "", kind(j.phase))
        for j in jobs
        if kind(j.phase) in (VALIDATION, COMBINATION)
        and j.status == "completed"
        and j.validation
        and j.hypothesis_id
    )
    labels = [f"{name} ({phase}, 1 seed)" for _, name, phase in effects]
    values = [effect for effect, _, _ in effects]
    errors: list[tuple[float, float]] = [(0.0, 0.0)] * len(values)
    if result.best.hypothesis_id is not None and result.ne_delta_low is not None:
        labels.append(f"{result.best.hypothesis_id} (test, {result.seeds} seeds)")
        values.append(result.ne_delta)
        assert result.ne_delta_high is not None
        errors.append((result.ne_delta - result.ne_delta_low, result.ne_delta_high - result.ne_delta))
    figure, axes = plots.figure(7, 0.5 * len(values) + 1.5)
    colours = ["tab:green" if value < 0 else "tab:red" for value in values]
    positions = list(range(len(values)))
    axes.barh(positions, values, color=colours, xerr=list(zip(*errors, strict=True)) if errors else None)
    if result.best.hypothesis_id is not None and result.ne_delta_low is not None:
        # The seeds behind the winner's mean and interval, so one outlier seed shows.
        seeds = [
            best - result.baseline.ne_by_seed[seed]
            for seed, best in result.best.ne_by_seed.items()
            if seed in result.baseline.ne_by_seed
        ]
        axes.scatter(
            seeds, [positions[-1] + 0.25] * len(seeds), color="black", marker="x", zorder=3, label="per seed"
        )
        axes.legend(fontsize=8)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.axvline(0, color="black", linewidth=0.8)
    axes.set_xlabel("NE delta vs the baseline (negative is better)")
    return plots.png(figure)


def _budget_burn(jobs: list[JobRecord], budget: float) -> bytes:
    figure, axes = plots.figure(7, 3.5)
    spent = [0.0]
    for job in jobs:
        spent.append(spent[-1] + (job.cost.cpu_seconds if job.cost else 0.0))
    axes.step(range(len(spent)), spent, where="post", label="CPU seconds spent")
    axes.axhline(budget, color="tab:red", linestyle="--", label=f"budget ({budget:g} CPU-s)")
    starts: dict[str, int] = {}
    for index, job in enumerate(jobs):
        starts.setdefault(kind(job.phase), index)
    for phase, index in starts.items():
        if index > 0:
            axes.axvline(
                index, color=PHASE_COLOURS.get(phase, "gray"), linestyle=":", label=f"{phase} starts"
            )
    axes.set_xlabel("jobs concluded")
    axes.set_ylabel("CPU seconds")
    axes.legend(fontsize=8)
    return plots.png(figure)
