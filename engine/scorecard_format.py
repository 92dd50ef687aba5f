"""A run's scorecard as files and as words: scorecard.json and scorecard.md in the run folder, the
markdown (also the export's model card) and the one-line row the run tables show. Evaluation writes
it; export, the command line and the runs table read it."""

from __future__ import annotations

import json
from pathlib import Path

from engine.files import write_atomic, write_json_atomic
from engine.text import clip, number, percent

SCORECARD_JSON = "scorecard.json"
SCORECARD_MD = "scorecard.md"
VERSION = 2  # 2: the learning section (taught and reworded recall)
CLIP = 80  # table cells of the markdown scorecard


def load_scorecard(run_dir: Path) -> dict | None:
    """The run's last scorecard, or None when it has none (or one from an older chattune)."""
    try:
        card = json.loads((Path(run_dir) / SCORECARD_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("version") == VERSION else None


def write_scorecard(run_dir: Path, card: dict) -> None:
    write_json_atomic(Path(run_dir) / SCORECARD_JSON, card)
    write_atomic(Path(run_dir) / SCORECARD_MD, scorecard_markdown(card))


def summary_row(card: dict, ab: dict | None = None) -> dict:
    """The figures a runs table shows for one scorecard (`ab`: fresher votes than the card's)."""
    heldout, forgetting, ab = card["heldout"], card["forgetting"], ab or card["ab"]
    taught, reworded = card["learning"]["taught"], card["learning"]["reworded"]
    return {
        "run": card["run"],
        "taught_n": taught["n"], "taught": taught["recalled"], "taught_rate": taught["rate"],
        "reworded_n": reworded["n"], "reworded": reworded["recalled"], "reworded_rate": reworded["rate"],
        "heldout_n": heldout["n"],
        "base_exact": heldout["base"]["exact_match"], "adapter_exact": heldout["adapter"]["exact_match"],
        "base_f1": heldout["base"]["f1"], "adapter_f1": heldout["adapter"]["f1"],
        "base_loglik": heldout["base"]["loglik"], "adapter_loglik": heldout["adapter"]["loglik"],
        "forgetting_score": forgetting["score"], "kept": forgetting["kept"], "general_n": forgetting["n"],
        "broken": forgetting["broken"],
        "verdict": card["verdict"]["label"], "reason": card["verdict"]["reason"],
        "win_rate": ab["win_rate"], "votes": ab["votes"],
    }


def recall_line(learning: dict) -> str:
    """'taught 19/20, other wordings 16/20': what the run learned, in one line."""
    taught, reworded = learning["taught"], learning["reworded"]
    line = f"taught {taught['recalled']}/{taught['n']}"
    if reworded["n"]:
        line += f", other wordings never trained on {reworded['recalled']}/{reworded['n']}"
    else:
        line += ", no held-out rewordings (trained with --no-augment)"
    return line


def ab_line(ab: dict) -> str:
    if not ab["votes"]:
        return "no A/B votes yet: compare base and adapter in the chat with `c`"
    return (f"adapter won {ab['wins']} of {ab['votes']} votes against the base ({percent(ab['win_rate'])}), "
            f"{ab['blind']} of them blind")


def forgetting_line(forgetting: dict) -> str:
    line = (f"kept {forgetting['kept']} of {forgetting['n']} general answers the same or equivalent "
            f"({percent(forgetting['score'])}); {forgetting['broken']} broken (right before, wrong now)")
    if forgetting["checkable"]:
        line += (f"; right answers: base {forgetting['base_correct']}/{forgetting['checkable']}, "
                 f"adapter {forgetting['adapter_correct']}/{forgetting['checkable']}")
    return line


def perplexity_line(forgetting: dict) -> str | None:
    ppl = forgetting.get("perplexity")
    if not ppl:
        return None
    change = (ppl["adapter"] / ppl["base"] - 1) if ppl["base"] else 0.0
    return f"perplexity on the held-out general text: base {ppl['base']:.2f}, adapter {ppl['adapter']:.2f} ({change:+.0%})"


def change_note(changed: dict) -> str:
    """How a changed general answer moved: broken (lost the expected answer), fixed, or just changed."""
    if changed["broken"]:
        return "broken"
    return "fixed" if changed["adapter_correct"] and not changed["base_correct"] else "changed"


def scorecard_markdown(card: dict) -> str:
    heldout, forgetting, verdict = card["heldout"], card["forgetting"], card["verdict"]
    out = [f"# Scorecard: run {card['run']}", "",
           f"Base model {card['base_model']}, answered with the {card['engine']} engine (greedy). "
           f"Evaluated {card['evaluated_at']} in {card['elapsed_s']:.0f} s.", "",
           f"## Training health: {verdict['label']}", "", verdict["reason"], "",
           "## What it learned", "",
           f"Asked under the app's default system prompt: {recall_line(card['learning'])}; "
           f"{forgetting['kept']} of {forgetting['n']} general answers kept ({percent(forgetting['score'])}).", ""]
    missed = card["learning"]["taught"]["missed"] + card["learning"]["reworded"]["missed"]
    if missed:
        out += ["| not recalled | taught answer | reply |", "|---|---|---|"]
        out += [f"| {_md(e['prompt'])} | {_md(e['reference'])} | {_md(e['reply'])} |" for e in missed]
        out.append("")
    out += [f"## Held-out score ({heldout['n']} examples, {heldout['source']})", ""]
    if heldout["n"]:
        out += ["| | exact match | token F1 | log-likelihood per token |", "|---|---|---|---|"]
        for side in ("base", "adapter"):
            s = heldout[side]
            out.append(f"| {side} | {percent(s['exact_match'])} | {number(s['f1'])} | {number(s['loglik'])} |")
        out += ["", f"{heldout['better']} got better, {heldout['worse']} got worse "
                    f"(token F1 moved by 0.1 or more)."]
        if heldout["total"] > heldout["n"]:
            out.append(f"The first {heldout['n']} of {heldout['total']} test examples were used.")
        for change, title in (("better", "Got better"), ("worse", "Got worse")):
            picked = [e for e in heldout["examples"] if e["change"] == change]
            if picked:
                out += ["", f"### {title}", ""]
                out += [f"- {_md(e['prompt'])}: reference {_md(e['reference'])}; base {_md(e['base_answer'])}; "
                        f"adapter {_md(e['adapter_answer'])}" for e in picked]
    else:
        out.append("No held-out examples of yours: every example was trained on. Pin some to test "
                   "(`chattune data split ID test`) to keep them as an exam no run trains on.")
    out += ["", "## Forgetting (general prompts)", "", forgetting_line(forgetting) + "."]
    ppl = perplexity_line(forgetting)
    if ppl:
        out += ["", ppl + "."]
    if forgetting["changed"]:
        out += ["", "| prompt | category | base | adapter | note |", "|---|---|---|---|---|"]
        for c in forgetting["changed"]:
            out.append(f"| {c['id']} | {c['category']} | {_md(c['base_answer'])} | {_md(c['adapter_answer'])} "
                       f"| {change_note(c)} |")
    out += ["", "## Blind A/B", "", f"As of the evaluation (`chattune eval` shows the latest): {ab_line(card['ab'])}.",
            ""]
    return "\n".join(out)


def _md(text: str) -> str:
    return clip(text, CLIP).replace("|", "\\|") or "(empty)"
