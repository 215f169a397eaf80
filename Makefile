# evproc: PGXS build. This is the only build that produces the installed module;
# CMakeLists.txt exists for unit tests and clang-tidy only.
EXTENSION = evproc
# The version this tree installs; keep evproc.control's default_version the same.
EXTVERSION = 0.3.0
MODULE_big = evproc

CORE_OBJS = src/core/json_schema.o src/core/schema_api.o src/core/backoff.o src/core/latency.o \
            src/core/version.o src/core/breaker.o src/core/replay_step.o src/core/destination.o \
            src/core/webhook_answer.o src/core/webhook_signature.o src/core/tick_pace.o \
            src/core/ready_hints.o \
            src/core/stream_naming.o
# The sink framework and its transports (plain C++, src/sink/) and the sink workers.
SINK_OBJS = src/sink/registry.o src/sink/webhook_options.o src/sink/webhook_transport.o \
            src/sink_worker.o src/sink_supervisor.o src/sink_lease.o src/sink_sql.o
PG_OBJS = src/module.o src/error_boundary.o src/topic_cache.o src/enqueue.o src/log_insert.o \
          src/topic_admin.o src/boundary_test.o src/spi_plan.o src/shared_state.o \
          src/commit_wake.o src/handler_call.o src/handler_watch.o src/delivery.o src/delivery_plans.o \
          src/delivery_claim.o src/delivery_read.o src/delivery_isolation.o src/delivery_outcome.o \
          src/delivery_breaker.o src/delivery_ready.o src/worker.o src/launcher.o src/ready_flags.o src/background_common.o \
          src/extension_gate.o src/database_check.o src/utility_hook.o src/settings.o \
          src/maintenance_worker.o src/manual_delivery.o src/metrics.o src/metrics_local.o \
          src/metrics_sql.o src/api_trampoline.o src/statement_sql.o src/lease_wait.o \
          src/lease_plans.o src/lease_read.o src/lease_end.o src/stream_origin.o
# The stream sinks (docs/streams.md): NATS JetStream with libnats, Kafka with librdkafka.
STREAM_OBJS = src/sink/stream_options.o src/sink/nats_transport.o src/sink/kafka_transport.o
OBJS = $(PG_OBJS) $(CORE_OBJS) $(SINK_OBJS) $(STREAM_OBJS)

DATA_built = extension/$(EXTENSION)--$(EXTVERSION).sql
# Released install scripts and the update scripts between versions: never edited once
# released (docs/operations.md "Upgrading"; extension/versions/SHA256SUMS and
# t/016_released_scripts.pl hold them to that; t/015_upgrade.pl checks every path against
# a fresh install).
DATA = $(wildcard extension/versions/$(EXTENSION)--*.sql)
EXTRA_CLEAN = $(DATA_built) tmp_check tmp_check_regress tmp_check_iso output_iso results regression.diffs \
              regression.out log

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config

# PostgreSQL headers are system headers for us: -Wall -Wextra must judge our code only.
PG_CPPFLAGS = -isystem $(shell $(PG_CONFIG) --includedir-server) -Isrc
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-register -fno-omit-frame-pointer
PG_CFLAGS = -Wall -Wextra
# Warnings are errors in the test suite and CI (scripts/test.sh builds with WERROR=1),
# not in a user's `make`: another compiler's new warning must not stop an install.
WERROR ?= 0
ifeq ($(WERROR),1)
PG_CXXFLAGS += -Werror
PG_CFLAGS += -Werror
endif
SHLIB_LINK = -lstdc++ -lcurl -lcrypto -lnats -lrdkafka

# Tests: pg_regress and the isolation tester each start a private server with
# evproc preloaded (test/evproc.conf), so `make installcheck` needs no running cluster.
# sql/install.sql first: it checks what CREATE EXTENSION made and runs the first
# maintenance (which the launcher runs in a database it serves), the others start there.
REGRESS = install $(filter-out install,$(basename $(notdir $(wildcard sql/*.sql))))
REGRESS_OPTS = --temp-instance=./tmp_check_regress --temp-config=test/evproc.conf \
               --load-extension=evproc --encoding=UTF8 --no-locale
ISOLATION = $(basename $(notdir $(wildcard test/isolation/specs/*.spec)))
ISOLATION_OPTS = --inputdir=test/isolation --outputdir=output_iso \
                 --temp-instance=./tmp_check_iso --temp-config=test/evproc.conf \
                 --load-extension=evproc --encoding=UTF8 --no-locale

# TAP tests (t/*.pl, PostgreSQL::Test::Cluster): real servers with running workers,
# killed and restarted. Each starts its own cluster.
TAP_TESTS = 1

# Debian's PGXS also compiles every source to LLVM bitcode for JIT inlining, with
# clang and without PG_CXXFLAGS. JIT-inlining evproc's code buys nothing (it is never
# called from expressions the JIT compiles hot), so we switch bitcode off rather than
# keep two compilers' flags in sync.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track header dependencies: every object depends on every header.
$(OBJS): $(wildcard src/*.hpp src/core/*.hpp src/sink/*.hpp)

# The install script: topics and enqueue, delivery, dead-letter operations, replay,
# storage and retention, monitoring, pull subscriptions' leases, and last the privileges
# (they revoke EXECUTE on everything in schema evproc defined before them).
$(DATA_built): extension/$(EXTENSION).sql extension/delivery.sql extension/operations.sql \
               extension/replay.sql extension/retention.sql extension/monitoring.sql \
               extension/lease.sql extension/privileges.sql extension/sink.sql
	cat $^ > $@

.PHONY: unit format format-check lint fuzz
unit:
	cmake -S . -B build -DPG_CONFIG=$(PG_CONFIG) >/dev/null
	cmake --build build -j2
	ctest --test-dir build --output-on-failure

SOURCES = $(wildcard src/*.cpp src/*.hpp src/core/*.cpp src/core/*.hpp src/sink/*.cpp src/sink/*.hpp \
                    test/unit/*.cpp test/fuzz/*.cpp)
format:
	clang-format -i $(SOURCES)
format-check:
	clang-format --dry-run --Werror $(SOURCES)
lint: unit
	clang-tidy -p build --quiet $(wildcard src/*.cpp src/core/*.cpp src/sink/*.cpp)

# libFuzzer over the schema validator (test/fuzz/schema_fuzzer.cpp): pure C++, built with
# clang apart from the PGXS objects. Runs FUZZ_SECONDS from the seed corpus; new inputs
# go to build-fuzz/corpus (not the repository), a crash, leak, timeout or sanitizer
# report fails it and leaves the input in build-fuzz/ (-timeout is generous: a loaded CI
# machine must not turn a slow run into a failure; real blow-ups take far longer).
FUZZ_SECONDS ?= 30
FUZZ_CXX ?= clang++
FUZZ_DIR = build-fuzz
FUZZ_SOURCES = test/fuzz/schema_fuzzer.cpp src/core/json_schema.cpp src/core/schema_api.cpp
$(FUZZ_DIR)/schema_fuzzer: $(FUZZ_SOURCES) $(wildcard src/core/*.hpp)
	mkdir -p $(FUZZ_DIR)
	$(FUZZ_CXX) -std=c++17 -g -O1 -Wall -Wextra -Werror -Isrc \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -o $@ $(FUZZ_SOURCES)
fuzz: $(FUZZ_DIR)/schema_fuzzer
	mkdir -p $(FUZZ_DIR)/corpus
	cd $(FUZZ_DIR) && ./schema_fuzzer -max_total_time=$(FUZZ_SECONDS) -timeout=30 \
	  -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
	  -dict=../test/fuzz/schema.dict corpus ../test/fuzz/corpus
