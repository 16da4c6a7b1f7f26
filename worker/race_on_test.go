//go:build race

package worker_test

// rssFactor scales the worker's memory bound in tests: the race detector's
// shadow memory is resident too (Go documents 5-10x memory under -race;
// here a worker's peak reads 10-25% over the bound with it, 446-572 MiB).
const rssFactor = 1.5
