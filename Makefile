# The two commands a newcomer needs: `make run` and `make test`.
GO ?= go

.PHONY: run test deps vet openapi-lint web-check bench fuzz drill loadtest loadtest-typecheck

# Root installs directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

## run: Understudy on the embedded default at http://127.0.0.1:8080
run:
	$(GO) run ./cmd/understudy

## test: vet, the OpenAPI lint, the web apps' and the k6 scripts' type checks, the whole suite under the race detector (Chromium tests and a short simulator run included), and one pass of every benchmark
test: deps vet openapi-lint web-check loadtest-typecheck
	$(GO) test -race -count=1 -timeout 12m ./...
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./...

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

## openapi-lint: docs/openapi.yaml against Redocly's recommended rules (docs/redocly.yaml); any error fails
REDOCLY := .ci/node_modules/.bin/redocly
openapi-lint: .ci/node_modules/.installed
	REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true $(REDOCLY) lint --config docs/redocly.yaml --format=stylish

## web-check: the web apps' plain ES modules (web/) type-checked by TypeScript (// @ts-check, JSDoc types; nothing is built)
TSC := .ci/node_modules/.bin/tsc
web-check: .ci/node_modules/.installed
	$(TSC) -p web/tsconfig.json
	$(TSC) -p web/tsconfig.sw.json

# The linter at the version pinned in .ci/package-lock.json, installed once into
# .ci/node_modules (not in git) and again only when the lock changes. Node.js and npm
# come from Debian's packages when the machine has none.
.ci/node_modules/.installed: .ci/package.json .ci/package-lock.json
	@command -v npm >/dev/null || { \
	  echo "npm not found: installing Node.js and npm from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm; }
	npm ci --prefix .ci --no-audit --no-fund --loglevel=error
	@touch $@

## loadtest-typecheck: the k6 scripts of loadtest/ against k6's published types (@types/k6 and typescript, pinned in .ci)
loadtest-typecheck: .ci/node_modules/.installed
	.ci/node_modules/.bin/tsc -p loadtest/jsconfig.json

## loadtest: start a region (the embedded default; LOADTEST_REDIS=redis://... for Redis hot state), load it with
## `understudy sim --scenario $(SCENARIO)` (default mixed; SIM_FLAGS for more, e.g. --drivers 10000 --json) and print the summary
SCENARIO ?= mixed
LOADTEST_ADDR ?= 127.0.0.1:18080
LOADTEST_REDIS ?=
SIM_FLAGS ?=
loadtest:
	@set -e; dir=$$(mktemp -d); bin=$$dir/understudy; \
	$(GO) build -o $$bin ./cmd/understudy; \
	extra=""; if [ -n "$(LOADTEST_REDIS)" ]; then extra="--redis $(LOADTEST_REDIS) --region loadtest"; fi; \
	$$bin serve --addr $(LOADTEST_ADDR) --data-dir $$dir/data $$extra >$$dir/server.log 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; wait $$pid 2>/dev/null; rm -rf $$dir' EXIT INT TERM; \
	echo "region: $$bin serve --addr $(LOADTEST_ADDR) $$extra (pid $$pid, log $$dir/server.log)"; \
	$$bin sim --url http://$(LOADTEST_ADDR) --data-dir $$dir/data --scenario $(SCENARIO) $(SIM_FLAGS)

## bench: the figures in docs/performance.md
bench:
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 2s ./dispatch/...

## fuzz: explore beyond the seed corpus for FUZZTIME per target (default 30s)
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## deps: what the tests start for real (a redis-server per test run, Chromium for the web apps' tests); installed from Debian if missing
deps:
	@command -v redis-server >/dev/null || { \
	  echo "redis-server not found: installing it from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }
	@test -x /usr/bin/chromium || { \
	  echo "chromium not found: installing it from Debian's packages (the web apps' end-to-end tests; Nanum fonts for their Korean screens)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-nanum; }

## drill: the outage drills against real regions (kill -9, SIGSTOP, two regions lost, a network partition, Redis flushed, slow links, key rotation), each with its outcome and times, then KILLS takeover timings (min, median, max) and request to offer across slow links
KILLS ?= 10
drill:
	$(GO) test -count=1 -v -run 'TestRegionLossIsTakenOverBySuccessor|TestPausedRegionIsFencedByTheLog|TestTwoRegionsLostLeaveTheSurvivorServingNothing|TestPartitionedRegionStopsAndRejoins|TestRedisFlushedUnderARunningRegionIsRefilled|TestSlowNetworkKeepsLeases|TestKeysRotateOnSIGHUP' ./cmd/understudy 2>&1 | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|_test.go:'
	$(GO) test -count=1 -run '^$$' -bench Takeover -benchtime $(KILLS)x -timeout 30m ./cmd/understudy 2>&1 | grep -E 'Benchmark|kill [0-9]|ok|FAIL'
	$(GO) test -count=1 -run '^$$' -bench RequestToOfferAcrossRegions -benchtime 50x ./cmd/understudy 2>&1 | grep -E 'Benchmark|ok|FAIL'
