"""Tag a chat message's risk from keywords, so a pipeline can route urgent messages first."""

import re

from server import StepContext, hookimpl

# Levels from most to least severe; the first level with a hit wins.
DEFAULT_KEYWORDS = {
    "high": ["outage", "down", "breach", "fraud", "lawsuit", "urgent", "security", "data loss"],
    "medium": ["refund", "cancel", "broken", "error", "complaint", "late", "overcharged"],
}


def prepare(config):
    """Compile one regex per level once, when the config loads."""
    keywords = config.get("keywords", DEFAULT_KEYWORDS)
    if not isinstance(keywords, dict) or not all(isinstance(v, list) for v in keywords.values()):
        raise ValueError("keywords must map a level to a list of words")
    # Lookarounds rather than \b, so keywords that start or end with punctuation ("c++") match too.
    return [
        (level, re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE))
        for level, words in keywords.items()
        if words
    ]


def tag(ctx: StepContext) -> dict:
    """Output `risk` (the first level with a keyword hit, else `low`) and `risk_matches`."""
    text = str(ctx.data.get(ctx.config.get("field", "text")) or "")
    for level, pattern in ctx.prepared:
        matches = sorted({m.lower() for m in pattern.findall(text)})
        if matches:
            return {"risk": level, "risk_matches": matches}
    return {"risk": "low", "risk_matches": []}


@hookimpl
def register_steps(register):
    register("step.risk_tag", tag, prepare=prepare, timeout=2)
