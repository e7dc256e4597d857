"""From persona to model: the system prompt its traits write, the sampling they shape, and the
feedback in a user's message that moves the relationship."""

from __future__ import annotations

import re

from companion.persona.model import Persona, Relationship, stage

# trait -> (what a low value says, what a high value says); 0.35..0.65 says nothing
TRAIT_WORDS: dict[str, tuple[str, str]] = {
    "warmth": ("You are reserved and matter-of-fact.", "You are warm and caring."),
    "humor": ("You are serious; you rarely joke.", "You have a good sense of humor."),
    "formality": ("You speak casually, like a friend.", "You speak formally and politely."),
    "verbosity": ("You keep replies very short.", "You give rich, detailed replies."),
    "curiosity": ("You rarely ask questions.", "You are curious and ask follow-up questions."),
    "playfulness": ("You stay calm and even.", "You are playful and lively."),
    "empathy": ("You focus on facts more than feelings.",
                "You notice feelings and respond to them with care."),
    "assertiveness": ("You are gentle and tentative.", "You are direct and confident."),
}
LOW, HIGH = 0.35, 0.65
MAX_EXAMPLES_IN_PROMPT = 3


def user_name(user_id: str | None) -> str:
    """How {{user}} reads: the user's id, or "the user" for the shared default user."""
    return "the user" if not user_id or user_id == "default" else user_id


def expand_macros(text: str, persona: Persona, user_id: str | None) -> str:
    """Character-card macros at chat time: {{char}} is the persona, {{user}} the user."""
    for macro, value in (("{{char}}", persona.name), ("{{user}}", user_name(user_id))):
        text = re.sub(re.escape(macro), lambda _m, v=value: v, text, flags=re.IGNORECASE)
    return text


def system_prompt(
    persona: Persona, relationship: Relationship | None = None, user_id: str | None = None
) -> str:
    """The persona's system prompt, macros expanded for `user_id`; stable while its stage with
    the user stays the same."""
    return expand_macros(_system_prompt(persona, relationship), persona, user_id)


def _system_prompt(persona: Persona, relationship: Relationship | None) -> str:
    """The persona's system prompt with the card macros left in."""
    if persona.system_prompt:
        lines = [persona.system_prompt]
    else:
        lines = [f"You are {persona.name}." + (f" {persona.description}" if persona.description
                                                else "")]
        for trait, (low, high) in TRAIT_WORDS.items():
            value = persona.trait(trait)
            if value <= LOW or value >= HIGH:
                lines.append(high if value >= HIGH else low)
        if persona.speaking_style:
            lines.append(f"Speaking style: {persona.speaking_style}.")
        if persona.scenario:
            lines.append(f"Setting: {persona.scenario}")
        if persona.example_lines:
            lines.append("Things you might say:")
            lines.extend(f'- "{x}"' for x in persona.example_lines[:MAX_EXAMPLES_IN_PROMPT])
        lines.append("Stay in character and never say you are an AI model unless asked.")
    if relationship is not None and not persona.is_default:
        lines.append(f"You and the user: {stage(relationship)}.")
    return "\n".join(lines)


def sampling(persona: Persona, temperature: float, max_tokens: int) -> dict[str, float | int]:
    """Temperature from playfulness and humor; reply length from verbosity (default: unchanged).

    Neutral traits (0.5) change nothing; the extremes move temperature by +-0.2 and the
    length limit from half to one and a half times the setting.
    """
    if persona.is_default:
        return {}
    lively = (persona.trait("playfulness") + persona.trait("humor")) / 2 - 0.5
    temp = round(min(2.0, max(0.0, temperature + 0.4 * lively)), 3)
    tokens = max(16, round(max_tokens * (0.5 + persona.trait("verbosity"))))
    return {"temperature": temp, "max_tokens": tokens}


_POSITIVE = re.compile(
    r"\b(thank(s| you)|i (really )?(love|like|enjoy) (talking|chatting) (to|with) you|"
    r"you('re| are) (great|the best|awesome|sweet|kind|helpful|funny)|good (job|answer))\b",
    re.IGNORECASE,
)
_NEGATIVE = re.compile(
    r"\b(you('re| are) (annoying|useless|rude|boring|wrong|stupid)|shut up|"
    r"i (hate|don't like) (talking|chatting) (to|with) you|that('s| is) (rude|unhelpful))\b",
    re.IGNORECASE,
)


def feedback(message: str) -> float:
    """+1 for thanks and praise, -1 for complaints about the companion, else 0."""
    if _NEGATIVE.search(message):
        return -1.0
    return 1.0 if _POSITIVE.search(message) else 0.0
