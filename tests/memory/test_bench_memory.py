"""bench memory's recall part on a tiny slice in the data sets' own formats: LongMemEval
(a pooled haystack, an abstention question) and LoCoMo, ours against the three baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from companion.bench import lme, locomo
from companion.bench.baselines import CachedEmbedder, RawTurns
from companion.embed import Embedder
from companion.memory import MemoryService
from companion.storage import Store


def _session(*turns: tuple[str, str, bool]) -> list[dict[str, object]]:
    return [{"role": r, "content": c, **({"has_answer": True} if a else {})} for r, c, a in turns]


FILLER = [
    _session(
        ("user", "Can you help me plan a weekly grocery budget for two people?", False),
        ("assistant", "Sure: start from 80 dollars a week and track receipts.", False),
    ),
    _session(
        ("user", "What are good stretches after a long day at the desk?", False),
        ("assistant", "Try neck rolls, a standing forward fold and a hip flexor stretch.", False),
    ),
]
EVIDENCE = _session(
    (
        "user",
        "I just adopted a grey kitten and named her Pebble, any tips for the first week?",
        True,
    ),
    (
        "assistant",
        "Congratulations! Keep Pebble in one quiet room with a litter box at first.",
        False,
    ),
)


def _question(qid: str, question: str, evidence: bool) -> dict[str, object]:
    sessions = [*FILLER, EVIDENCE] if evidence else FILLER
    return {
        "question_id": qid,
        "question_type": "single-session-user",
        "question": question,
        "question_date": "2023/05/30 (Tue) 16:40",
        "answer": "Pebble",
        "answer_session_ids": [f"{qid}_ev"] if evidence else [],
        "haystack_dates": [f"2023/05/2{i} (Sat) 10:00" for i in range(len(sessions))],
        "haystack_session_ids": [f"{qid}_f{i}" for i in range(len(FILLER))]
        + ([f"{qid}_ev"] if evidence else []),
        "haystack_sessions": sessions,
    }


def test_longmemeval_suites_score_ours_and_the_baselines(
    tmp_path: Path, store: Store, embedder: Embedder
) -> None:
    oracle = tmp_path / "oracle"
    oracle.mkdir()
    for qid, text, evidence in (
        ("q1", "What did I name my new kitten?", True),
        ("q2_abs", "What did I name my new puppy?", False),
    ):
        (oracle / f"1_{qid}.json").write_text(json.dumps(_question(qid, text, evidence)))
    memory = MemoryService(store, CachedEmbedder(embedder))
    try:
        figures, table = lme.run(memory, tmp_path, pool=2)
    finally:
        memory.close()
    assert figures["lme_questions"] == 2 and figures["lme_turns_fed"] == 6 + 4
    for name in ("lme_recall_all_at_5", "lme_recall_any_at_5", "lme_turn_recall_all_at_5"):
        assert figures[name] == 1.0  # one easy answerable question: everyone finds it
        assert figures[f"{name}_best_baseline"] == 1.0
    assert {f"lme_recall_all_at_5_{b}" for b in ("dense", "bm25", "fusion", "dense_user")} <= set(
        figures
    )
    assert figures["lme_single_session_user_session_recall_all_at_5"] == 1.0
    assert figures["lme_abs_abstained"] in (0.0, 1.0)
    assert figures["lme_abs_false_abstention"] == 0.0
    row = table["pool2/single-session-user"]
    assert set(row) == {
        "companion",
        "dense",
        "bm25",
        "fusion",
        "dense_user",
        "bm25_user",
        "fusion_user",
    }
    assert row["companion"]["session_recall_all"] == 1.0 and row["companion"]["n"] == 1


def test_locomo_scores_ours_and_the_baselines(
    tmp_path: Path, store: Store, embedder: Embedder
) -> None:
    turns = [
        ("Mia", "I started pottery classes on Tuesday, I made a little blue bowl!"),
        ("Leo", "That's great! I went fishing with my dad at the lake."),
        ("Mia", "My cat Luna knocked the bowl off the shelf though."),
        ("Leo", "Oh no! Did it break?"),
    ]
    conversation = {
        "speaker_a": "Mia",
        "speaker_b": "Leo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": s, "dia_id": f"D1:{i}", "text": t}
            for i, (s, t) in enumerate(turns, start=1)
        ],
    }
    qa = [
        {
            "question": "What did Mia make in pottery class?",
            "answer": "a bowl",
            "evidence": ["D1:1"],
            "category": 4,
        },
        {
            "question": "Who did Leo go fishing with?",
            "answer": "his dad",
            "evidence": ["D1:2"],
            "category": 4,
        },
    ]
    path = tmp_path / "locomo.json"
    path.write_text(json.dumps([{"sample_id": "t1", "conversation": conversation, "qa": qa}]))
    memory = MemoryService(store, CachedEmbedder(embedder))
    try:
        figures = locomo.run(memory, path)
    finally:
        memory.close()
    assert figures["locomo_questions"] == 2
    assert figures["locomo_recall_at_5"] == 1.0
    assert figures["locomo_recall_at_5_best_baseline"] == max(
        figures[f"locomo_{b}_recall_at_5"] for b in ("dense", "bm25", "fusion")
    )


def test_raw_turn_baselines_rank_as_they_say(embedder: Embedder) -> None:
    texts = ["I love sourdough bread", "My car needs new tyres", "Bread and butter pudding"]
    raw = RawTurns(texts, embedder.embed(texts))
    try:
        ranks = raw.rankings("sourdough bread recipe", embedder.embed_one("sourdough bread"), 3)
    finally:
        raw.close()
    assert ranks["bm25"][0] == 0 and set(ranks["bm25"]) == {0, 2}  # no word of the car turn
    assert ranks["dense"][0] == 0 and len(ranks["dense"]) == 3
    assert ranks["fusion"][0] == 0


def test_raw_turn_baselines_leave_out_what_was_not_said_yet(embedder: Embedder) -> None:
    texts = ["I love sourdough bread", "Sourdough bread again today", "My car needs new tyres"]
    raw = RawTurns(texts, embedder.embed(texts))
    said = np.array([True, False, True])
    try:
        ranks = raw.rankings("sourdough bread", embedder.embed_one("sourdough bread"), 3, said)
    finally:
        raw.close()
    assert ranks["bm25"] == [0] and ranks["dense"][0] == 0 and 1 not in ranks["dense"]
    assert 1 not in ranks["fusion"] and len(ranks["dense"]) == 2
