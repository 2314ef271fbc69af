# integrity — build, test, benchmark.
#
#   make          build bin/integrity (and the sample OS once it lands)
#   make run      build, initialise a System if needed, mount it at ~/integrity
#   make test     everything CI runs: vet, unit, contract, end-to-end tests
#   make bench    benchmarks side by side with gocryptfs and tmpfs
#   make tools    build the pinned btcd into .cache/bin (tests start real nodes)

GO          ?= go
BTCD_VERSION := v0.26.2
TOOLS       := $(CURDIR)/.cache/bin
BIN         := bin/integrity
OS_WASM     := bin/os.wasm
export PATH := $(TOOLS):$(PATH)

.PHONY: all build run test test-short bench tools fuzz vet clean

all: build

build: $(OS_WASM)
	$(GO) build -o $(BIN) ./cmd/integrity

# The sample OS of the System VM (`integrity os install` finds it beside
# bin/integrity). Always rebuilt: Go's build cache makes that cheap.
.PHONY: $(OS_WASM)
$(OS_WASM):
	GOOS=wasip1 GOARCH=wasm $(GO) build -o $(OS_WASM) ./vm/os

tools: $(TOOLS)/btcd

$(TOOLS)/btcd:
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install github.com/btcsuite/btcd@$(BTCD_VERSION)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test: build tools vet
	INTEGRITY_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 25m ./...

# Each fuzz target for a short while; `make fuzz FUZZTIME=10m` for longer.
FUZZTIME ?= 20s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

bench: build tools
	scripts/bench.sh

run: build
	scripts/run.sh

clean:
	rm -rf bin
