"""companion: a self-hosted AI companion that runs a local LLM and remembers its users."""

import os

__version__ = "0.1.0"

# llama.cpp's CPU backend (libggml-cpu, built with OpenMP) lets a waiting thread spin for about
# 300,000 rounds (milliseconds) at each of the hundreds of barriers of a decode and after it.
# Where the cores are shared (the server's own request threads, its clients, other processes)
# the spinning thread holds the core that the thread it waits for needs: on 2 cores an 8-stream
# decode fell from about 150 tok/s to 3-12 (docs/engine.md). A short spin (1,000 rounds, then
# sleep) keeps nearly all of the quiet machine's speed and none of that collapse. Set only when
# the environment sets neither variable; libgomp reads them when llama_cpp is first imported,
# which is always after this package.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"
