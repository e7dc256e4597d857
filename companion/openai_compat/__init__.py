"""OpenAI API compatibility: request parameters and their policy, the client's own conversation
as the prompt, JSON and tool-call grammars, and OpenAI's response shapes."""
