package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// monitorCounts runs Redis MONITOR for d and counts the commands that
// clients of database index db issued, by command name. Commands that Lua
// scripts issue are counted apart (lua), as they cost no round trip.
// MONITOR sees every database, so this isolates the bench's own traffic
// from anything else on the same server.
func monitorCounts(ctx context.Context, opt *redis.Options, db int, d time.Duration) (clients, lua map[string]int, err error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", opt.Addr)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close()
	br := bufio.NewReaderSize(conn, 64<<10)
	deadline := time.Now().Add(d)
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if opt.Password != "" {
		auth := []string{"AUTH", opt.Password}
		if opt.Username != "" {
			auth = []string{"AUTH", opt.Username, opt.Password}
		}
		if err := respCommand(conn, br, auth...); err != nil {
			return nil, nil, fmt.Errorf("redis auth: %w", err)
		}
	}
	if err := respCommand(conn, br, "MONITOR"); err != nil {
		return nil, nil, fmt.Errorf("redis monitor: %w", err)
	}
	conn.SetReadDeadline(deadline)
	clients, lua = map[string]int{}, map[string]int{}
	prefix := "[" + strconv.Itoa(db) + " "
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return clients, lua, nil
			}
			return clients, lua, err
		}
		// +1700000000.123456 [8 127.0.0.1:5678] "evalsha" "..."
		i := strings.IndexByte(line, '[')
		if i < 0 || !strings.HasPrefix(line[i:], prefix) {
			continue
		}
		j := strings.IndexByte(line[i:], ']')
		if j < 0 {
			continue
		}
		source := line[i+len(prefix) : i+j]
		rest := strings.TrimSpace(line[i+j+1:])
		cmd, _, _ := strings.Cut(strings.Trim(rest, `"`), `"`)
		cmd = strings.ToLower(cmd)
		if source == "lua" {
			lua[cmd]++
		} else {
			clients[cmd]++
		}
	}
}

// respCommand sends one command and expects a simple-string reply.
func respCommand(conn net.Conn, br *bufio.Reader, args ...string) error {
	var sb strings.Builder
	fmt.Fprintf(&sb, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&sb, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(sb.String())); err != nil {
		return err
	}
	reply, err := br.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(reply, "+") {
		return errors.New(strings.TrimSpace(reply))
	}
	return nil
}

// commandCalls sums the calls of every command in INFO commandstats. It is
// server-wide: every client of every database counts.
func commandCalls(ctx context.Context, rdb redis.UniversalClient) (int64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	var total int64
	for _, line := range strings.Split(info, "\n") {
		_, rest, ok := strings.Cut(line, "calls=")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		v, err := strconv.ParseInt(n, 10, 64)
		if err == nil {
			total += v
		}
	}
	return total, nil
}

// redisCPU is Redis's own CPU time (INFO cpu, server-wide).
func redisCPU(ctx context.Context, rdb redis.UniversalClient) (time.Duration, error) {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second)), nil
}

// topCommands formats the largest counts, per second over d.
func topCommands(m map[string]int, d time.Duration, n int) string {
	type kv struct {
		k string
		v int
	}
	var s []kv
	for k, v := range m {
		s = append(s, kv{k, v})
	}
	sort.Slice(s, func(i, j int) bool { return s[i].v > s[j].v || s[i].v == s[j].v && s[i].k < s[j].k })
	var parts []string
	for i := 0; i < len(s) && i < n; i++ {
		parts = append(parts, fmt.Sprintf("%s %.0f/s", s[i].k, float64(s[i].v)/d.Seconds()))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func sum(m map[string]int) int {
	t := 0
	for _, v := range m {
		t += v
	}
	return t
}
