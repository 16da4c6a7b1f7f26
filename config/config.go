// Package config reads the platform's configuration from the environment.
// Every variable is documented in README.md and configs/scrapethis.env.
package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is the whole configuration of any scrapethis command.
type Config struct {
	DatabaseURL string
	DBMaxConns  int // Postgres connections per process at most
	// UserMaxRunning caps each user's running jobs over all workers
	// (SCRAPETHIS_USER_MAX_RUNNING); 0 is no cap. The API, the scheduler
	// and the workers must all have the same.
	UserMaxRunning int
	RedisURL       string
	HTTPAddr       string

	Worker            Worker
	WorkerMetricsAddr string
	Sandbox           Sandbox

	SchedulerMetricsAddr string
	SchedulesFile        string

	// Project archives (deploy): the largest upload (413 above), its largest
	// real unpacked size and its most entries (400 above either).
	UploadMaxMB       int
	UnpackMaxMB       int
	ArchiveMaxEntries int

	// Webhooks may target private and loopback addresses (a platform on a
	// private network); off, only public addresses are allowed.
	WebhookAllowPrivate bool
	// Retention: items and logs of jobs final longer than this are
	// deleted (the job rows stay, with purged_at); 0 keeps them forever.
	Retention time.Duration

	AdminUser          string
	AdminPassword      string
	MonitoringReadOnly bool
	PrometheusURL      string

	LogLevel  slog.Level
	LogFormat string // json, text, or "" for json unless stderr is a terminal
}

// Sandbox is the spider sandbox's configuration, as plain values; the
// worker builds its policy from them (see package sandbox).
type Sandbox struct {
	Enabled           bool   // SCRAPETHIS_SANDBOX: on unless "off"
	Warm              bool   // SCRAPETHIS_SANDBOX_WARM: reused warm sandboxes, on unless "off"
	UIDFirst, UIDLast int    // SCRAPETHIS_SANDBOX_UIDS "FIRST-LAST"
	Network           string // SCRAPETHIS_SANDBOX_NETWORK: host or isolated
	// The isolated network: SCRAPETHIS_SANDBOX_NETWORK_RANGE (the jobs'
	// IPv4 prefix), SCRAPETHIS_SANDBOX_NETWORK_DENY (more prefixes no job
	// may reach; the platform's Postgres and Redis always are, see
	// PlatformHosts) and SCRAPETHIS_SANDBOX_DNS (the jobs' nameservers).
	NetworkRange netip.Prefix
	NetworkDeny  []netip.Prefix
	DNS          []netip.Addr
	Binds        []string // SCRAPETHIS_SANDBOX_BINDS: extra read-only host paths
	MemoryMB     int      // SCRAPETHIS_JOB_MEMORY_MB: a job's default memory limit
	MemoryMaxMB  int      // SCRAPETHIS_JOB_MEMORY_MAX_MB: the most a job may ask for
	DiskMB       int      // SCRAPETHIS_JOB_DISK_MB: the job directory's size
	Procs        int      // SCRAPETHIS_JOB_PROCS: processes and threads
	NoFile       int      // SCRAPETHIS_JOB_NOFILE: open files per process
	CPUSeconds   int      // SCRAPETHIS_JOB_CPU_SECONDS: CPU time per process, 0 none
}

func (p *parser) sandbox() Sandbox {
	s := Sandbox{Enabled: true, Network: p.str("SCRAPETHIS_SANDBOX_NETWORK", "host")}
	switch v := strings.ToLower(p.str("SCRAPETHIS_SANDBOX", "on")); v {
	case "on", "true", "1", "yes":
	case "off", "false", "0", "no":
		s.Enabled = false
	default:
		p.errs = append(p.errs, "SCRAPETHIS_SANDBOX must be on or off")
	}
	switch v := strings.ToLower(p.str("SCRAPETHIS_SANDBOX_WARM", "on")); v {
	case "on", "true", "1", "yes":
		s.Warm = true
	case "off", "false", "0", "no":
	default:
		p.errs = append(p.errs, "SCRAPETHIS_SANDBOX_WARM must be on or off")
	}
	if s.Network != "host" && s.Network != "isolated" {
		p.errs = append(p.errs, "SCRAPETHIS_SANDBOX_NETWORK must be host or isolated")
	}
	rng, err := netip.ParsePrefix(p.str("SCRAPETHIS_SANDBOX_NETWORK_RANGE", "10.213.0.0/16"))
	if err != nil || !rng.Addr().Is4() || rng.Bits() > 30 {
		p.errs = append(p.errs, "SCRAPETHIS_SANDBOX_NETWORK_RANGE must be an IPv4 prefix of at least a /30, such as 10.213.0.0/16")
	}
	s.NetworkRange = rng.Masked()
	for _, v := range list(p.str("SCRAPETHIS_SANDBOX_NETWORK_DENY", "")) {
		pr, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				p.errs = append(p.errs, "SCRAPETHIS_SANDBOX_NETWORK_DENY must list addresses or prefixes (CIDR), comma-separated")
				continue
			}
			pr = netip.PrefixFrom(a, a.BitLen())
		}
		s.NetworkDeny = append(s.NetworkDeny, pr.Masked())
	}
	for _, v := range list(p.str("SCRAPETHIS_SANDBOX_DNS", "")) {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() || a.IsLoopback() {
			p.errs = append(p.errs, "SCRAPETHIS_SANDBOX_DNS must list IPv4 nameservers off the host's loopback, comma-separated")
			continue
		}
		s.DNS = append(s.DNS, a)
	}
	uids := p.str("SCRAPETHIS_SANDBOX_UIDS", "200000-200999")
	first, last, ok := strings.Cut(uids, "-")
	var err1, err2 error
	s.UIDFirst, err1 = strconv.Atoi(strings.TrimSpace(first))
	s.UIDLast, err2 = strconv.Atoi(strings.TrimSpace(last))
	if !ok || err1 != nil || err2 != nil || s.UIDFirst < 1000 || s.UIDLast < s.UIDFirst || s.UIDLast > 1<<31-2 {
		p.errs = append(p.errs, "SCRAPETHIS_SANDBOX_UIDS must be a range FIRST-LAST of uids from 1000 up, such as 200000-200999")
	}
	for _, b := range strings.FieldsFunc(p.str("SCRAPETHIS_SANDBOX_BINDS", ""), func(r rune) bool { return r == ':' || r == ',' }) {
		if !strings.HasPrefix(b, "/") {
			p.errs = append(p.errs, "SCRAPETHIS_SANDBOX_BINDS must list absolute paths")
		}
		s.Binds = append(s.Binds, b)
	}
	s.MemoryMB = p.integer("SCRAPETHIS_JOB_MEMORY_MB", 1024, 16, 1<<20)
	s.MemoryMaxMB = p.integer("SCRAPETHIS_JOB_MEMORY_MAX_MB", max(4096, s.MemoryMB), s.MemoryMB, 1<<20)
	s.DiskMB = p.integer("SCRAPETHIS_JOB_DISK_MB", 1024, 1, 1<<20)
	s.Procs = p.integer("SCRAPETHIS_JOB_PROCS", 512, 8, 1<<20)
	s.NoFile = p.integer("SCRAPETHIS_JOB_NOFILE", 1024, 64, 1<<20)
	s.CPUSeconds = p.integer("SCRAPETHIS_JOB_CPU_SECONDS", 86400, 0, 1<<31-1)
	return s
}

// list splits a comma- or space-separated value.
func list(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' })
}

// PlatformHosts are the hosts of the platform's Postgres and Redis
// (DATABASE_URL, REDIS_URL, Sentinel and Cluster addr= options included),
// which isolated jobs must not reach; Unix socket paths are left out.
func (c Config) PlatformHosts() []string {
	var hosts []string
	add := func(hostport string) {
		for _, hp := range strings.Split(hostport, ",") {
			h := hp
			if hh, _, err := net.SplitHostPort(hp); err == nil {
				h = hh
			}
			h = strings.Trim(h, "[]")
			if h != "" && !strings.HasPrefix(h, "/") && !slices.Contains(hosts, h) {
				hosts = append(hosts, h)
			}
		}
	}
	for _, raw := range []string{c.DatabaseURL, c.RedisURL} {
		if u, err := url.Parse(raw); err == nil && u.Scheme != "" {
			add(u.Host)
			for _, k := range []string{"host", "addr"} {
				for _, v := range u.Query()[k] {
					add(v)
				}
			}
			continue
		}
		// Postgres' key=value form.
		for _, f := range strings.Fields(raw) {
			if v, ok := strings.CutPrefix(f, "host="); ok {
				add(strings.Trim(v, "'"))
			}
		}
	}
	return hosts
}

// PlatformPorts are the TCP ports of the platform's Postgres and Redis
// (DATABASE_URL's, REDIS_URL's, their addr= and host= options', 5432 and
// 6379 where none is given), which no job may connect to on this host.
func (c Config) PlatformPorts() []uint16 {
	var ports []uint16
	add := func(hostport string, def uint16) {
		for _, hp := range strings.Split(hostport, ",") {
			port := def
			if _, ps, err := net.SplitHostPort(hp); err == nil {
				if n, err := strconv.ParseUint(ps, 10, 16); err == nil {
					port = uint16(n)
				}
			}
			if !slices.Contains(ports, port) {
				ports = append(ports, port)
			}
		}
	}
	for i, raw := range []string{c.DatabaseURL, c.RedisURL} {
		def := uint16(5432)
		if i == 1 {
			def = 6379
		}
		if u, err := url.Parse(raw); err == nil && u.Scheme != "" {
			add(u.Host, def)
			for _, k := range []string{"host", "addr"} {
				for _, v := range u.Query()[k] {
					add(v, def)
				}
			}
			if v := u.Query().Get("port"); v != "" {
				add("x:"+v, def)
			}
			continue
		}
		// Postgres' key=value form.
		port := strconv.Itoa(int(def))
		for _, f := range strings.Fields(raw) {
			if v, ok := strings.CutPrefix(f, "port="); ok {
				port = strings.Trim(v, "'")
			}
		}
		add("x:"+port, def)
	}
	return ports
}

// Load reads the configuration through getenv.
func Load(getenv func(string) string) (Config, error) {
	p := parser{getenv: getenv}
	c := Config{
		DatabaseURL:          p.str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/scrapethis?sslmode=disable"),
		DBMaxConns:           p.integer("SCRAPETHIS_DB_MAX_CONNS", 20, 2, 1000),
		UserMaxRunning:       p.integer("SCRAPETHIS_USER_MAX_RUNNING", 0, 0, 1_000_000),
		RedisURL:             p.str("REDIS_URL", "redis://127.0.0.1:6379/0"),
		HTTPAddr:             p.str("SCRAPETHIS_HTTP_ADDR", "127.0.0.1:8080"),
		WorkerMetricsAddr:    p.str("SCRAPETHIS_WORKER_METRICS_ADDR", "127.0.0.1:9101"),
		SchedulerMetricsAddr: p.str("SCRAPETHIS_SCHEDULER_METRICS_ADDR", "127.0.0.1:9102"),
		SchedulesFile:        p.str("SCRAPETHIS_SCHEDULES_FILE", ""),
		UploadMaxMB:          p.integer("SCRAPETHIS_UPLOAD_MAX_MB", 50, 1, 4096),
		UnpackMaxMB:          p.integer("SCRAPETHIS_UNPACK_MAX_MB", 200, 1, 65536),
		ArchiveMaxEntries:    p.integer("SCRAPETHIS_ARCHIVE_MAX_ENTRIES", 10000, 1, 10000000),
		AdminUser:            p.str("SCRAPETHIS_ADMIN_USER", "admin"),
		AdminPassword:        p.str("SCRAPETHIS_ADMIN_PASSWORD", ""),
		MonitoringReadOnly:   p.boolean("SCRAPETHIS_MONITORING_READONLY", false),
		WebhookAllowPrivate:  p.boolean("SCRAPETHIS_WEBHOOK_ALLOW_PRIVATE", false),
		Retention:            p.retention("SCRAPETHIS_RETENTION"),
		PrometheusURL:        p.str("SCRAPETHIS_PROMETHEUS_URL", ""),
		LogFormat:            p.str("SCRAPETHIS_LOG_FORMAT", ""),
	}
	w := DefaultWorker()
	w.SpidersDir = p.str("SCRAPETHIS_SPIDERS_DIR", w.SpidersDir)
	w.Concurrency = p.integer("SCRAPETHIS_WORKER_CONCURRENCY", w.Concurrency, 1, 10000)
	w.CancelGrace = p.duration("SCRAPETHIS_CANCEL_GRACE", w.CancelGrace)
	w.DefaultTimeout = p.duration("SCRAPETHIS_JOB_TIMEOUT", w.DefaultTimeout)
	w.ShutdownTimeout = p.duration("SCRAPETHIS_SHUTDOWN_TIMEOUT", w.ShutdownTimeout)
	w.TaskCheckInterval = p.duration("SCRAPETHIS_TASK_CHECK_INTERVAL", w.TaskCheckInterval)
	w.LostAfter = p.duration("SCRAPETHIS_WORKER_LOST_AFTER", w.LostAfter)
	w.ScrapyLogLevel = p.str("SCRAPETHIS_SCRAPY_LOG_LEVEL", w.ScrapyLogLevel)
	w.Python = p.str("SCRAPETHIS_PYTHON", w.Python)
	switch w.ScrapyRunner = strings.ToLower(p.str("SCRAPETHIS_SCRAPY_RUNNER", w.ScrapyRunner)); w.ScrapyRunner {
	case "fork", "exec":
	default:
		p.errs = append(p.errs, "SCRAPETHIS_SCRAPY_RUNNER must be fork or exec")
	}
	w.JobItemMaxMB = p.integer("SCRAPETHIS_JOB_ITEMS_MAX_MB", w.JobItemMaxMB, 1, 1<<30)
	w.CacheDir = p.str("SCRAPETHIS_CACHE_DIR", w.CacheDir)
	w.CacheMaxMB = p.integer("SCRAPETHIS_CACHE_MAX_MB", w.CacheMaxMB, 16, 1<<24)
	if v := p.str("SCRAPETHIS_SPIDER_GUARD", ""); v == "off" || v == "false" {
		w.Guard = []string{} // none; nil means the command's default
	}
	c.Worker = w
	c.Sandbox = p.sandbox()
	switch strings.ToLower(p.str("SCRAPETHIS_LOG_LEVEL", "info")) {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		p.errs = append(p.errs, "SCRAPETHIS_LOG_LEVEL must be debug, info, warn or error")
	}
	if len(p.errs) > 0 {
		return c, fmt.Errorf("configuration: %s", strings.Join(p.errs, "; "))
	}
	return c, nil
}

// Logger returns the process logger: JSON when stderr is not a terminal
// (or SCRAPETHIS_LOG_FORMAT=json), text otherwise.
func (c Config) Logger() *slog.Logger {
	format := c.LogFormat
	if format == "" {
		format = "json"
		if st, err := os.Stderr.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

type parser struct {
	getenv func(string) string
	errs   []string
}

func (p *parser) str(key, def string) string {
	if v := strings.TrimSpace(p.getenv(key)); v != "" {
		return v
	}
	return def
}

func (p *parser) integer(key string, def, lo, hi int) int {
	v := p.str(key, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.errs = append(p.errs, fmt.Sprintf("%s must be a whole number from %d to %d", key, lo, hi))
		return def
	}
	return n
}

// retention accepts days ("30d"), Go durations ("12h") or "" / "0" for
// none; anything under an hour is refused as surely a mistake.
func (p *parser) retention(key string) time.Duration {
	v := p.str(key, "")
	if v == "" || v == "0" {
		return 0
	}
	var d time.Duration
	var err error
	if days, ok := strings.CutSuffix(v, "d"); ok {
		var n int
		n, err = strconv.Atoi(days)
		d = time.Duration(n) * 24 * time.Hour
	} else {
		d, err = time.ParseDuration(v)
	}
	if err != nil || d < time.Hour {
		p.errs = append(p.errs, fmt.Sprintf("%s must be a number of days (30d) or a duration of at least 1h (36h)", key))
		return 0
	}
	return d
}

// duration accepts Go durations ("10s", "1m30s") or plain seconds ("10").
func (p *parser) duration(key string, def time.Duration) time.Duration {
	v := p.str(key, "")
	if v == "" {
		return def
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil && n >= 0 {
		return time.Duration(n * float64(time.Second))
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		p.errs = append(p.errs, fmt.Sprintf("%s must be a duration such as 10s or 1m", key))
		return def
	}
	return d
}

func (p *parser) boolean(key string, def bool) bool {
	v := p.str(key, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.errs = append(p.errs, key+" must be true or false")
		return def
	}
	return b
}
