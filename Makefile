# The two commands a newcomer needs: `make run` and `make test`.
GO ?= go

.PHONY: run test deps vet bench fuzz

# Root installs directly; anyone else through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

## run: Understudy on the embedded default at http://127.0.0.1:8080
run:
	$(GO) run ./cmd/understudy

## test: vet, the whole suite under the race detector, and one pass of every benchmark
test: deps vet
	$(GO) test -race -count=1 -timeout 8m ./...
	$(GO) test -count=1 -run '^$$' -bench . -benchtime 1x ./...

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

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

## deps: what the tests start for real (a redis-server per test run); installed from Debian if missing
deps:
	@command -v redis-server >/dev/null || { \
	  echo "redis-server not found: installing it from Debian's packages"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }
