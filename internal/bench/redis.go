package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// monitorCounts runs Redis MONITOR for d and counts the commands that
// clients of database index db issued, by command name. Commands that Lua
// scripts issue are counted apart (lua), as they cost no round trip.
// MONITOR sees every database, so this isolates the bench's own traffic
// from anything else on the same server.
//
// go-redis's MonitorCmd reads on a goroutine of its own, holding a lock
// through each blocking read, that only Stop ends; and it puts a pooled
// connection back in the pool while reading from it (go-redis #3079,
// #3901). So it runs here on a dedicated connection (Client.Conn, whose
// pool never reads from it), and at the window's end the socket's read
// deadline is moved to now, so that the reader lets go of its lock, Stop
// takes it, and the reader ends. After Stop it sends at most one more
// line, which the drain below leaves room for.
func monitorCounts(ctx context.Context, opt *redis.Options, db int, d time.Duration) (clients, lua map[string]int, err error) {
	var sock monitorSocket
	o := *opt
	o.PoolSize, o.MinIdleConns, o.MaxIdleConns = 1, 0, 1
	o.ReadTimeout = -1 // no deadline but the one set below
	o.Protocol = 2     // RESP3 drains push frames from the connection on release, racing the reader
	o.Dialer = sock.dial(o.TLSConfig)
	rc := redis.NewClient(&o)
	defer rc.Close()
	conn := rc.Conn()

	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	lines := make(chan string, 1024)
	m := conn.Monitor(wctx, lines)
	if err := m.Err(); err != nil {
		return nil, nil, fmt.Errorf("redis monitor: %w", err)
	}
	m.Start()
	clients, lua = map[string]int{}, map[string]int{}
	prefix := "[" + strconv.Itoa(db) + " "
	for {
		select {
		case <-wctx.Done():
			if err := sock.expire(); err != nil {
				return nil, nil, fmt.Errorf("redis monitor: %w", err)
			}
			m.Stop()
			for drained := false; !drained; {
				select {
				case <-lines:
				default:
					drained = true
				}
			}
			return clients, lua, ctx.Err()
		case line := <-lines:
			countMonitorLine(line, prefix, clients, lua)
		}
	}
}

// monitorSocket keeps the connection a client dials, to set its deadline.
type monitorSocket struct {
	mu   sync.Mutex
	conn net.Conn
}

func (s *monitorSocket) dial(tlsConfig *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		var err error
		if tlsConfig != nil {
			c, err = (&tls.Dialer{Config: tlsConfig}).DialContext(ctx, network, addr)
		} else {
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		}
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.conn = c
		s.mu.Unlock()
		return c, nil
	}
}

// expire makes every read on the socket, now and later, fail at once.
func (s *monitorSocket) expire() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return errors.New("no connection")
	}
	return s.conn.SetReadDeadline(time.Now())
}

// countMonitorLine counts one MONITOR line,
//
//	1700000000.123456 [8 127.0.0.1:5678] "evalsha" "..."
//
// if it is of the database prefix names ("[8 "), by its source: a client,
// or "lua".
func countMonitorLine(line, prefix string, clients, lua map[string]int) {
	i := strings.IndexByte(line, '[')
	if i < 0 || !strings.HasPrefix(line[i:], prefix) {
		return
	}
	j := strings.IndexByte(line[i:], ']')
	if j < 0 {
		return
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
