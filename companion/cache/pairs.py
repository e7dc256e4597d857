"""Hand-written chat pairs: near misses that must never share a reply, and paraphrases that may."""

from __future__ import annotations

# Alike in words, different in meaning: a cached reply for one is wrong for the other.
NEAR_MISSES: list[tuple[str, str]] = [
    ("How do I learn C++?", "How do I learn C?"),
    ("What's the weather in Paris today?", "What's the weather in London today?"),
    ("what's the weather in paris today", "what's the weather in london today"),
    ("Is it safe to fly today?", "Is it not safe to fly today?"),
    ("Is it safe to fly today?", "Isn't it safe to fly today?"),
    ("What is my name?", "What is your name?"),
    ("Do you like me?", "Do I like you?"),
    ("When did World War 2 end?", "When did World War 1 end?"),
    ("When did the war end?", "Why did the war end?"),
    ("Where was Einstein born?", "When was Einstein born?"),
    ("Give me 3 tips for sleeping better.", "Give me 5 tips for sleeping better."),
    ("Give me three tips for sleeping better.", "Give me five tips for sleeping better."),
    ("Can dogs eat grapes?", "Can cats eat grapes?"),
    ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
    ("Who wrote Pride and Prejudice?", "Who wrote War and Peace?"),
    ("What is the capital of Australia?", "What is the capital of Austria?"),
    ("I love you.", "I hate you."),
    ("What is the best way to cook rice?", "What is the worst way to cook rice?"),
    ("How many calories are in an apple?", "How many calories are in a banana?"),
    ("Tell me a joke about cats.", "Tell me a joke about dogs."),
    ("How do I delete my account?", "How do I create my account?"),
    ("Translate hello to French.", "Translate hello to Spanish."),
    ("Recommend a book for a beginner.", "Recommend a book for an expert."),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
    ("What should I eat before running?", "What should I eat after running?"),
    ("How do I say thank you in Japanese?", "How do I say sorry in Japanese?"),
    ("What's 12 times 12?", "What's 12 times 13?"),
    ("Write a poem about the sea.", "Write a poem about the sky."),
    ("I feel happy today.", "I feel sad today."),
    (
        "How long should I boil an egg for a soft yolk?",
        "How long should I boil an egg for a hard yolk?",
    ),
]

# Same meaning, different words: a cache may answer one with the other's reply.
PARAPHRASES: list[tuple[str, str]] = [
    ("How do I bake sourdough bread?", "how can i bake sourdough bread"),
    ("What is the capital of France?", "What's the capital city of France?"),
    ("Can you recommend a good book to read?", "Could you recommend a good book to read?"),
    ("How can I fall asleep faster?", "How do I fall asleep more quickly?"),
    (
        "What are some tips for learning to play the guitar?",
        "What are some tips for learning guitar?",
    ),
    ("Tell me a fun fact about space.", "Tell me an interesting fact about space."),
    ("How do I make a cup of tea?", "How do you make a cup of tea?"),
    ("What is the boiling point of water?", "At what temperature does water boil?"),
    ("Give me some ideas for a rainy day.", "Give me ideas for things to do on a rainy day."),
    ("How can I be more productive at work?", "How do I become more productive at work?"),
]
