#!/usr/bin/env bash
# What a user gets from `pip install .`: the wheel, installed into a new venv outside the checkout,
# answers from another folder. Run by CI (`make check-install`) after `make setup`.
# torch is the build .venv has (scripts/setup.sh's choice, from the same place); every other wheel,
# llama-cpp-python's included, comes from pip's cache, so nothing is compiled or downloaded again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
started=$SECONDS
work=$(mktemp -d "${TMPDIR:-/tmp}/chattune-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" .
"$PYTHON" -m venv "$work/venv"
# --no-compile: Python compiles what it imports when it imports it; compiling all of torch up front
# is most of an install's CPU time, and changes nothing this check looks at.
install="$work/venv/bin/python -m pip install --quiet --no-compile"
torch_version=$(.venv/bin/python -c "import torch; print(torch.__version__)")
case "$torch_version" in
  *+cpu) $install "torch==$torch_version" \
           || $install "torch==$torch_version" --extra-index-url https://download.pytorch.org/whl/cpu ;;
  *) $install "torch==$torch_version" ;;
esac
echo "check-install: wheel built, torch installed: $((SECONDS - started)) s"
$install "$work"/dist/chattune-*.whl
echo "check-install: chattune and its dependencies installed: $((SECONDS - started)) s"

# From a folder that is not the checkout, with nothing of it on the path.
mkdir "$work/elsewhere"
cd "$work/elsewhere"
unset PYTHONPATH CHATTUNE_WORKSPACE CHATTUNE_PROMPTS
chattune="$work/venv/bin/chattune"
fail() { echo "check-install: $*" >&2; exit 1; }

"$chattune" --help >/dev/null
where=$("$work/venv/bin/python" -c "import engine, prompts; print(engine.__file__, prompts.__file__)")
case "$where" in "$work/venv/"*" $work/venv/"*) ;; *) fail "chattune was imported from $where, not the venv" ;; esac
"$work/venv/bin/python" -c "from engine.prompt_sets import general_prompts; assert len(general_prompts()) >= 50"

"$chattune" ask "What is the capital of France?" >answer.txt 2>ask.err \
  || fail "chattune ask failed: $(cat ask.err)"
grep -q Paris answer.txt || fail "chattune ask did not say Paris: $(cat answer.txt)"
[ ! -s ask.err ] || fail "chattune ask printed more than the answer: $(head -3 ask.err)"

printf '%s\n' '{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}' >chats.jsonl
"$chattune" data import chats.jsonl >/dev/null
# Into a file, not a pipe: grep -q stops reading at the first match, and pipefail would then
# count chattune's broken pipe as a failure.
"$chattune" data stats >stats.txt || fail "chattune data stats failed"
grep -Eq 'approved[^a-z]+1' stats.txt || fail "chattune data stats shows no table: $(head -3 stats.txt)"
"$chattune" data export out.jsonl >/dev/null
[ -s out.jsonl ] || fail "chattune data export out.jsonl did not write ./out.jsonl"
echo "check-install: chattune --help, ask, data import/stats/export work from $PWD ($((SECONDS - started)) s in all)"
