"""The requests bench openai sends: a 10-turn conversation, tools and JSON schemas."""

from __future__ import annotations

from typing import Any

LINES = [
    "Hi! I just moved to Lisbon.",
    "I work as a nurse on night shifts.",
    "What could I do on my days off?",
    "I like the sea and long walks.",
    "Any tips for sleeping during the day?",
    "My sister visits next month.",
    "Where should I take her for dinner?",
    "She does not eat meat.",
    "What about a day trip?",
    "Thanks! What was my job again?",
]
# The same user's next conversation: memory now holds the first one, and recalls from it.
LINES_RETURNING = [
    "Hi again! I just got back from a night shift.",
    "My sister loved her visit, by the way.",
    "Can you suggest a walk by the sea for tomorrow?",
    "I feel tired after work lately.",
    "What should I cook tonight?",
    "Something without meat, please.",
    "Any good books for the beach?",
    "I might learn to surf this summer.",
    "Is it hard for beginners?",
    "Thanks! Which city do I live in again?",
]


def _fn(name: str, description: str, properties: dict[str, Any], required: list[str]
        ) -> dict[str, Any]:  # fmt: skip
    schema = {"type": "object", "properties": properties, "required": required,
              "additionalProperties": False}  # fmt: skip
    function = {"name": name, "description": description, "parameters": schema}
    return {"type": "function", "function": function}


TOOLS = [
    _fn("get_weather", "The weather now in a city",
        {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        ["city", "unit"]),
    _fn("set_timer", "Start a timer", {"minutes": {"type": "integer", "minimum": 1,
        "maximum": 600}, "label": {"type": "string", "maxLength": 40}}, ["minutes"]),
    _fn("add_todo", "Add an item to the to-do list",
        {"title": {"type": "string"}, "priority": {"type": "string",
         "enum": ["low", "medium", "high"]}, "done": {"type": "boolean"}}, ["title", "priority"]),
    _fn("convert_currency", "Convert an amount of money",
        {"amount": {"type": "number"}, "from": {"type": "string", "pattern": "^[A-Z]{3}$"},
         "to": {"type": "string", "pattern": "^[A-Z]{3}$"}}, ["amount", "from", "to"]),
    _fn("find_contacts", "Search the address book",
        {"name": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 20},
         "tags": {"type": "array", "items": {"type": "string"}}}, ["name"]),
]  # fmt: skip
TOOL_ASKS = [
    "What's the weather like in Porto today?",
    "Set a timer for 12 minutes for the pasta.",
    "Remind me to buy milk, it is urgent.",
    "How much is 250 euros in US dollars?",
    "Find my friend Maria's phone number.",
]

SCHEMAS: list[tuple[str, dict[str, Any]]] = [
    ("Describe a pet: Miso, a cat, 3 years old.",
     {"type": "object", "properties": {"name": {"type": "string"}, "species": {"type": "string"},
      "age": {"type": "integer", "minimum": 0}}, "required": ["name", "species", "age"]}),
    ("Give me a recipe title and three ingredients for pancakes.",
     {"type": "object", "properties": {"title": {"type": "string"}, "ingredients": {
      "type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5}},
      "required": ["title", "ingredients"]}),
    ("Rate the movie Up from 1 to 5 and say if you recommend it.",
     {"type": "object", "properties": {"rating": {"type": "integer", "minimum": 1,
      "maximum": 5}, "recommend": {"type": "boolean"}}, "required": ["rating", "recommend"]}),
    ("Extract the event: lunch with Ana on Friday at noon.",
     {"type": "object", "properties": {"what": {"type": "string"}, "who": {"type": "string"},
      "day": {"type": "string", "enum": ["monday", "tuesday", "wednesday", "thursday",
      "friday", "saturday", "sunday"]}}, "required": ["what", "day"]}),
    ("Sentiment of: 'I love this new phone!'",
     {"type": "object", "properties": {"sentiment": {"type": "string", "enum": ["positive",
      "neutral", "negative"]}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
      "required": ["sentiment", "confidence"]}),
]  # fmt: skip


def tool_asks(size: int) -> list[dict[str, Any]]:
    """`size` tool-call requests over the tools, alternating required and a named function."""
    out = []
    for i in range(size):
        tool = TOOLS[i % len(TOOLS)]
        choice: Any = "required"
        if i % 2:
            choice = {"type": "function", "function": {"name": tool["function"]["name"]}}
        ask = [{"role": "user", "content": TOOL_ASKS[i % len(TOOL_ASKS)]}]
        out.append({"model": "companion", "max_tokens": 64, "temperature": 0 if i < len(TOOLS)
                    else 0.7, "seed": i, "user": f"tools-{i % 5}", "tools": TOOLS,
                    "tool_choice": choice, "messages": ask})  # fmt: skip
    return out


def schema_asks(size: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """`size` json_schema requests and the schema each must satisfy."""
    out = []
    for i in range(size):
        ask, schema = SCHEMAS[i % len(SCHEMAS)]
        fmt = {"type": "json_schema", "json_schema": {"name": f"s{i % len(SCHEMAS)}",
               "schema": schema, "strict": True}}  # fmt: skip
        body = {"model": "companion", "max_tokens": 96, "temperature": 0 if i < len(SCHEMAS)
                else 0.7, "seed": i, "user": f"json-{i % 5}", "response_format": fmt,
                "messages": [{"role": "user", "content": ask}]}  # fmt: skip
        out.append((body, schema))
    return out
