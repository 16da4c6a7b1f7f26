package bench

import (
	"context"
	"fmt"
	"time"
)

// idleAPI measures what the API alone costs Redis while nothing happens.
func (b *Benchmarker) idleAPI(ctx context.Context) error {
	clients, _, err := monitorCounts(ctx, b.ropt, b.redisDB, b.sz.Idle)
	if err != nil {
		return err
	}
	rate := float64(sum(clients)) / b.sz.Idle.Seconds()
	b.res.add("idle: Redis commands/s, API only", rate, "cmd/s", nil, false, nil, topCommands(clients, b.sz.Idle, 4))
	return nil
}

// idleWorker measures the cost of the worker's polling while it has no
// job: the Redis commands its database index receives (MONITOR, so other
// databases' traffic is left out), the server-wide INFO commandstats
// delta, and the worker's own CPU.
func (b *Benchmarker) idleWorker(ctx context.Context) error {
	// A pause, not a synchronisation: the start-up job's traffic ends, and
	// nothing signals that it has.
	time.Sleep(b.sz.Settle)
	calls0, err := commandCalls(ctx, b.rdb)
	if err != nil {
		return err
	}
	cpu0, err := b.procs.cpu(b.worker.pid())
	if err != nil {
		return err
	}
	rcpu0, _ := redisCPU(ctx, b.rdb)
	start := time.Now()
	clients, lua, err := monitorCounts(ctx, b.ropt, b.redisDB, b.sz.Idle)
	if err != nil {
		return err
	}
	calls1, err := commandCalls(ctx, b.rdb)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	cpu1, _ := b.procs.cpu(b.worker.pid())
	rcpu1, _ := redisCPU(ctx, b.rdb)

	rate := float64(sum(clients)) / b.sz.Idle.Seconds()
	note := fmt.Sprintf("%s; inside Lua: %s", topCommands(clients, b.sz.Idle, 4), topCommands(lua, b.sz.Idle, 4))
	b.res.add("idle: Redis commands/s, worker (its DB, MONITOR)", rate, "cmd/s", nil, false, nil, note)
	// commandstats counts MONITOR's own INFO calls and every other client of the server.
	wide := float64(calls1-calls0-1) / elapsed.Seconds()
	b.res.add("idle: Redis commands/s, server-wide (commandstats)", wide, "cmd/s", nil, false, nil, "")
	cpu := cpu1.sub(cpu0).self
	b.workerIdleCPU = 100 * cpu.Seconds() / elapsed.Seconds()
	b.res.add("idle: worker CPU", b.workerIdleCPU, "% of a core", nil, false, nil,
		fmt.Sprintf("Redis server CPU while idle: %.1f%% of a core (server-wide)", 100*(rcpu1-rcpu0).Seconds()/elapsed.Seconds()))
	return nil
}
