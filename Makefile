# ScrapeThis: the front door. `make run` and `make test` are all a newcomer needs.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin
BIN := bin/scrapethis

.PHONY: help run test build lint bench bench-quick services migrate screenshots clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build bin/scrapethis and its sandbox init bin/scrapethis-init (always asks go build: its cache knows better than file dates)
	go build -o $(BIN) ./cmd/scrapethis
	CGO_ENABLED=0 go build -tags sandboxinit -ldflags='-s -w' -o bin/scrapethis-init ./cmd/scrapethis-init

services: ## start (or install) PostgreSQL, Redis and Scrapy when missing
	@scripts/services.sh

run: services build ## start services, then everything in one process (scrapethis dev)
	SCRAPETHIS_SPIDERS_DIR=$${SCRAPETHIS_SPIDERS_DIR:-./spiders} $(BIN) dev

migrate: services build ## apply database migrations
	$(BIN) migrate

test: services ## the whole suite against real PostgreSQL and Redis
	go vet ./...
	go test -race -count=1 -timeout 20m -parallel 8 ./...

lint: ## go.mod tidy, gofmt and go vet: any finding fails
	@go mod tidy -diff || (echo "lint: go.mod/go.sum are not tidy: run go mod tidy"; exit 1)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "lint: gofmt differences in:"; gofmt -l $$(git ls-files '*.go'); exit 1)
	go vet ./...

bench: services build ## the platform benchmark (writes bench/results.json)
	go run ./cmd/bench

bench-quick: services build ## a shorter benchmark, under a minute
	go run ./cmd/bench -quick

screenshots: services ## retake the console's screenshots in docs/ (its browser test, headless Chromium)
	go test -count=1 -run TestBrowser ./console/ -args -screenshots

clean: ## remove build output
	rm -rf bin
