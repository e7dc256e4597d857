"""`companion bench load`: simulated users against a real `companion serve` (tiny model), and the
lost-message check against a real SQLite file."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from companion.bench.load import Exchange, lost_messages
from companion.storage import open_store

REPO = Path(__file__).resolve().parents[2]
FIGURES = (
    "load_completed", "load_429", "load_errors_5xx", "load_errors_other", "load_lost_messages",
    "load_p50_ms", "load_p95_ms", "requests_per_min", "tokens_per_s", "server_queue_depth_max",
    "load_decode_limit_ratio", "load_prefill_tokens_computed", "load_new_prompt_tokens",
    "load_kv_restores", "load_loop_lag_p99_ms", "load_ttft_p50_ms", "load_itl_p50_ms",
)  # fmt: skip


def companion(
    *args: str, timeout: float = 120, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COMPANION_MODEL_SIZE": "tiny", **extra_env}
    command = [str(Path(sys.executable).with_name("companion")), *args]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def persona_chat(root: Path) -> Path:
    """A few conversations in Synthetic-Persona-Chat's CSV layout (the test does not depend on
    ../shared/data being beside the checkout)."""
    rows = [
        ["I love hiking.", "I have a cat.",
         "User 1: Hi! How are you today?\nUser 2: Great, thanks.\n"
         "User 1: I went hiking this weekend.\nUser 2: Nice!\nUser 1: Do you like the outdoors?"],
        ["I am a teacher.", "I play chess.",
         "User 1: Hello there.\nUser 2: Hi.\nUser 1: I teach math at a school.\n"
         "User 2: Cool.\nUser 1: What do you do for fun?"],
        ["I bake bread.", "I run marathons.",
         "User 1: Good morning!\nUser 2: Morning.\nUser 1: I baked bread today.\n"
         "User 2: Yum.\nUser 1: Have you ever baked?"],
    ]
    folder = root / "persona_chat"
    folder.mkdir(parents=True)
    with (folder / "Synthetic-Persona-Chat_test.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["user 1 personas", "user 2 personas", "Best Generated Conversation"])
        writer.writerows(rows)
    return root


def test_bench_load_small_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    data = persona_chat(tmp_path / "shared")
    done = companion("bench", "load", "--users", "4", "--duration", "6", "--max-tokens", "16",
                     "--think", "0.5", "--probe", "2", "--json", str(out),
                     timeout=300, COMPANION_SHARED_DATA=str(data))  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "load_lost_messages" in done.stdout
    saved = json.loads(out.read_text())
    assert saved["suite"] == "load"
    figures = saved["figures"]
    assert set(FIGURES) <= set(figures)
    assert figures["load_completed"] > 0
    assert figures["load_errors_5xx"] == 0, saved["notes"]["error_samples"]
    assert figures["load_errors_other"] == 0, saved["notes"]["error_samples"]
    assert figures["load_lost_messages"] == 0, saved["notes"]["lost_examples"]
    assert 0 < figures["load_p50_ms"] <= figures["load_p95_ms"]
    assert 0 < figures["load_itl_p50_ms"] <= figures["load_itl_p95_ms"]  # streamed turns' gaps
    goals = saved["notes"]["goals_met"]
    assert goals["load_errors_5xx=0"] and goals["load_lost_messages=0"]
    assert saved["notes"]["probe"]["probe_tokens_per_s"] > 0  # the decode limit, measured first
    assert figures["load_decode_limit_ratio"] > 0 and figures["load_new_prompt_tokens"] > 0
    assert figures["load_prefill_tokens_computed"] > 0 and figures["load_loop_lag_p99_ms"] >= 0
    assert "exit code 0" in saved["notes"]["server"]


def test_bench_load_refuses_a_non_loopback_host() -> None:
    done = companion("bench", "load", "--host", "192.0.2.7", "--duration", "5", timeout=60)
    assert done.returncode == 1
    assert "only runs against a loopback address" in done.stderr
    assert "Traceback" not in done.stderr


def test_load_options_are_refused_for_other_suites() -> None:
    done = companion("bench", "models", "--users", "3", timeout=60)
    assert done.returncode == 2
    assert "--users is for bench load or scale only" in done.stderr


def test_lost_messages_finds_missing_and_changed_rows(tmp_path: Path) -> None:
    db = tmp_path / "companion.db"
    store = open_store(f"sqlite:///{db}")
    try:
        store.create_session("u1", "s1")
        kept = store.add_message("s1", "user", "Do you like dogs?", status="pending")
        reply = store.complete_exchange(kept.id, "I love dogs!", user_tokens=4, reply_tokens=4,
                                        model="tiny", cached=False, timings={})  # fmt: skip
        store.add_message("s1", "user", "And cats?", status="pending")  # never completed
    finally:
        store.close()

    def ack(text: str, answer: str, message_id: int | None) -> Exchange:
        return Exchange("u1", "s1", "api", text, answer, message_id, 10.0, None)

    assert lost_messages(db, [ack("Do you like dogs?", "I love dogs!", reply.id)])[0] == 0
    assert lost_messages(db, [ack("Do you like dogs?", "I love dogs!", None)])[0] == 0
    # the reply the user saw differs from the stored one
    assert lost_messages(db, [ack("Do you like dogs?", "I hate dogs.", reply.id)])[0] == 1
    # the user message is still pending and its reply was never stored
    lost, examples = lost_messages(db, [ack("And cats?", "Cats too.", None)])
    assert lost == 2
    assert "And cats?" in examples[0]
    # one stored exchange cannot answer for two acknowledged ones
    twice = [ack("Do you like dogs?", "I love dogs!", None)] * 2
    assert lost_messages(db, twice)[0] == 2
