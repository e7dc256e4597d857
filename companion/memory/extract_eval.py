"""How precise rule extraction is on labelled sentences: facts about the user must be stored;
questions, hypotheticals and negated statements must not become facts (a negation may be
stored as such: "Has no dog"). `extraction_figures()` is what bench memory reports."""

from __future__ import annotations

from companion.memory.extract import extract

# (sentence, what a correct extraction stores: the expected fact's words, or None for nothing)
LABELLED: tuple[tuple[str, str | None], ...] = (
    # facts about the user
    ("My name is Ana.", "Name is Ana"),
    ("I live in Lisbon.", "Lives in Lisbon"),
    ("I moved to Berlin last year.", "Lives in Berlin"),
    ("I'm 34 years old.", "Is 34 years old"),
    ("I work as a nurse.", "Works as a nurse"),
    ("I'm a teacher.", "Works as a teacher"),
    ("I work at Airbus.", "Works at Airbus"),
    ("I love hiking.", "Likes hiking"),
    ("I really enjoy baking bread.", "Likes baking bread"),
    ("I hate jazz.", "Dislikes jazz"),
    ("I don't like horror movies.", "Dislikes horror movies"),
    ("My favourite colour is green.", "Favourite colour is green"),
    ("My dog is called Rex.", "Has a dog named Rex"),
    ("I have a cat named Tom.", "Has a cat named Tom"),
    ("I have two kids.", "Has two kids"),
    ("My sister is called Maria.", "Has a sister named Maria"),
    ("I'm from Chile.", "Is from Chile"),
    ("I grew up in Oslo.", "Is from Oslo"),
    ("I'm going to visit Rome next month.", "Plan:"),
    ("I'm so stressed about my exam.", "Feels stressed"),
    ("Remember that my exam is on Friday.", "Asked to remember"),
    ("I'm a big fan of football.", "Likes football"),
    ("I adore sushi.", "Likes sushi"),
    ("I'm planning to learn the piano.", "Plan:"),
    ("I feel lonely these days.", "Feels lonely"),
    ("My wife is named Laura.", "Has a wife named Laura"),
    ("When I'm stressed I love baking.", "Likes baking"),
    ("I'm not sure, but I love hiking.", "Likes hiking"),
    # negations: nothing stored, or the negation as such (a fact, or the user's own words)
    ("I don't have a dog.", "Has no dog"),
    ("I do not have any kids.", "Has no kids"),
    ("I'm not a teacher.", None),
    ("I don't live in Paris anymore.", "don't live in Paris"),
    ("I never lived in London.", "never lived in London"),
    ("I don't think I love hiking.", None),
    ("It's not that I like jazz.", None),
    ("I no longer work at Google.", "no longer work at Google"),
    ("I am not from Spain.", None),
    ("My name is not Bob.", None),
    ("Honestly, I don't hate jazz.", "don't hate jazz"),
    # questions
    ("And what do I love doing?", None),
    ("Where do I live?", None),
    ("Do I have a dog?", None),
    ("What is my name?", None),
    ("Am I a teacher?", None),
    ("Do you think I love hiking?", None),
    ("Why do I hate mornings?", None),
    ("what do i like to eat", None),
    ("Can you tell me where I work?", None),
    ("Is my favourite colour blue?", None),
    ("Would you believe I live in Porto?", None),
    # hypotheticals and wishes
    ("If I lived in Paris, I would eat croissants every day.", None),
    ("If I had a dog, I would call it Rex.", None),
    ("Imagine I'm a pilot.", None),
    ("Suppose I moved to Tokyo.", None),
    ("I would love to live in Japan one day.", None),
    ("I wish I had a cat.", None),
    ("Maybe I'll become a doctor someday, who knows.", None),
    ("Pretend my name is Zed.", None),
    ("What if I love hiking?", None),
    ("I might move to Canada.", None),
    ("I'd rather not talk about my job.", None),
)


def judged() -> list[tuple[str, str | None, list[str]]]:
    """Every labelled sentence with what extraction stored from it."""
    return [(s, want, [c.text for c in extract(s)]) for s, want in LABELLED]


def extraction_figures() -> dict[str, float]:
    """Precision (stored facts that are right) and recall (facts found) on LABELLED."""
    right = wrong = missed = 0
    for _, want, got in judged():
        if want is None:
            wrong += bool(got)
        elif any(want.lower() in g.lower() for g in got):
            right += 1
            wrong += len(got) > 1  # a second, stray fact from the same sentence
        else:
            wrong += bool(got)
            missed += 1
    facts = sum(1 for _, want in LABELLED if want is not None)
    return {
        "extraction_precision": round(right / (right + wrong), 4) if right + wrong else 0.0,
        "extraction_recall": round(right / facts, 4) if facts else 0.0,
        "extraction_sentences": float(len(LABELLED)),
    }
