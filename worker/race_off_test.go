//go:build !race

package worker_test

// rssFactor scales the worker's memory bound in tests (see race_on_test.go).
const rssFactor = 1.0
