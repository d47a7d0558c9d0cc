# mpsa build, test and lint entry points. `make help` lists them.
# Go from PATH, else the standard install location (sudo often drops it from PATH).
GO        ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# Evaluated when used (lint), after `make deps` may have installed Go.
GOBIN      = $(shell $(GO) env GOPATH 2>/dev/null)/bin
# Tests run go themselves (to build binaries for namespaces and the guest).
export PATH := $(dir $(GO)):$(PATH)
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w -X github.com/mpsa/mpsa/internal/version.Version=$(VERSION) \
             -X github.com/mpsa/mpsa/internal/version.Commit=$(COMMIT)
# How much `make test` fuzzes each target: a count of executions (about 5-10 s
# each here). A count, not a duration: Go 1.26's fuzz coordinator can fail a
# duration-bounded run with "context deadline exceeded" and no crasher when a
# loaded machine makes a worker late at the deadline (go.dev/issue/75804, fixed
# in Go 1.27). FUZZTIME=30s still works for a local run.
FUZZTIME  ?= 300000x
# Installed by `make deps` (scripts/deps.d/20-go-tools.sh reads it here).
# The MODULE version: the Go module proxy serves staticcheck only by it
# (`@2026.2.2`, the release name, is refused with 403); `staticcheck
# -version` prints both, "staticcheck 2026.2.2 (0.8.2)".
STATICCHECK_VERSION ?= v0.8.2

.PHONY: all build test unit fuzz lint deps demo bench bench-engine scale package clean help fresh-root

all: build

help:
	@echo "make demo     controller and three members in network namespaces, real charon"
	@echo "make test     make deps, then the whole test suite (unit, namespace, charon and kernel tests, fuzz)"
	@echo "make unit     the test suite without make deps and fuzzing (go test ./...)"
	@echo "make lint     gofmt, go vet, staticcheck"
	@echo "make build    bin/mpsad and bin/mpsactl"
	@echo "make deps     install what the tests need (Debian packages, Go tools)"
	@echo "make bench    data-plane throughput figures"
	@echo "make scale    N real members over real charon: join, rekey, restart (N=\"100 300 1000\" plots)"
	@echo "make bench-engine  the engine with 1,000 to 100,000 simulated members (docs/scale.md)"
	@echo "make package  .deb and .rpm into dist/"
	@echo "make fresh-root  the README's two commands in a pristine Debian 12 root (debootstrap), as CI runs them"

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/mpsad ./cmd/mpsactl

# The whole suite, after installing what it needs (make deps: quick when
# everything is there), so that `sudo make test` works alone on a fresh
# Debian 12 machine. Tests that need root, charon or qemu fail under CI=true
# when what they need is missing, and skip with the reason elsewhere.
test: deps
	$(MAKE) unit fuzz

unit:
	$(GO) test -count=1 -timeout 25m ./...

fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) scripts/fuzz.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GOBIN)/staticcheck -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))' || { echo "staticcheck $(STATICCHECK_VERSION) is not in $(GOBIN): run make deps"; exit 1; }
	$(GOBIN)/staticcheck ./...

deps:
	scripts/install-deps.sh

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

bench-engine:
	GO=$(GO) scripts/bench-engine.sh

# The guard CI runs (.ci/run): the README's two commands inside a fresh
# copy of a pristine Debian 12 root; docs/operations.md says more.
fresh-root:
	scripts/fresh-root.sh

# `make scale`: the scale harness with real charon (test/scale, docs/scale.md)
# for each member count in N, REPEAT times each; with two counts or more it
# draws the rekey times against N into docs/scale-rekey.png. Needs root;
# installs the Debian packages it needs (scripts/scale.sh says which).
# BGP=1 adds a route reflector and 4 prefixes per member (docs/scale.md).
N      ?= 1000
REPEAT ?= 1
BGP    ?=
scale:
	GO=$(GO) N="$(N)" REPEAT="$(REPEAT)" BGP="$(BGP)" scripts/scale.sh

# `make package`: dist/mpsa_<version>-1_<arch>.deb and dist/mpsa-<version>-1.<arch>.rpm,
# by packaging/cmd/mkpkg (nfpm as a Go library). It builds mpsad and mpsactl
# itself, once per package: stamped with the package version (git describe
# made valid for dpkg and rpm) and with the default swanctl.conf and VICI
# socket of the distribution's strongSwan (internal/paths: Debian's for the
# .deb, Fedora's for the .rpm). File times and man page dates are the commit
# time.
PKG_COMMITS       ?= $(shell git rev-list --count HEAD 2>/dev/null || echo 0)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)
PKG_RELEASE       ?= 1

package:
	$(GO) run ./packaging/cmd/mkpkg -go $(GO) -out dist -src . \
		-describe '$(VERSION)' -commit '$(COMMIT)' -commits $(PKG_COMMITS) -date $(SOURCE_DATE_EPOCH) \
		-release $(PKG_RELEASE) -arch $(shell $(GO) env GOARCH)

clean:
	rm -rf bin dist
