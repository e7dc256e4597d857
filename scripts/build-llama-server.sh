#!/bin/sh
# llama.cpp's llama-server from the sources vendored in the llama-cpp-python sdist (the same
# llama.cpp the local engine runs), built once and cached outside the repo; a no-op when built.
# Prints the binary's path. The loopback topology test and `bench scale` use it.
set -eu
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${COMPANION_CACHE:-$HOME/.cache/companion}/llama-server-$VERSION"
BINARY="$CACHE/llama-server"
if [ -x "$BINARY" ]; then
    echo "$BINARY"
    exit 0
fi
PYTHON="${PYTHON:-python3}"
JOBS="${JOBS:-1}"
WORK="$CACHE.build"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
"$PYTHON" -m pip download --quiet --no-deps --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -d . >&2
tar xzf llama_cpp_python-"$VERSION".tar.gz
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
# any x86-64 with AVX2, not -march=native (see the Makefile's CMAKE_ARGS)
cmake -S "$SRC" -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF \
    -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
nice -n 15 cmake --build build --target llama-server -j "$JOBS" >&2
mkdir -p "$CACHE"
cp build/bin/llama-server "$BINARY.tmp"
mv "$BINARY.tmp" "$BINARY"
cd /
rm -rf "$WORK"
echo "$BINARY"
