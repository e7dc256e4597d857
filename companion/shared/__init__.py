"""State that instances share: per piece a small interface with an in-process backend and a
Redis backend (one module each), chosen by `redis_url` (docs/deploy.md)."""
