//go:build !sandboxinit

package sandbox

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNetFor(t *testing.T) {
	r := netip.MustParsePrefix("10.213.0.0/16")
	a, b := netFor(r, 200000), netFor(r, 200001)
	if a.host.String() != "10.213.53.1" || a.job.String() != "10.213.53.2" || a.link != "stj200000" || b.host.String() != "10.213.53.5" {
		t.Fatalf("%+v %+v", a, b)
	}
	cfg := DefaultConfig()
	cfg.Network, cfg.InitArgv = NetworkIsolated, []string{"/x"}
	cfg.NetworkRange = netip.MustParsePrefix("10.9.0.0/24") // 64 /30s for 1000 uids
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "64 /30s for 1000 uids") {
		t.Fatalf("validate: %v", err)
	}
}

// TestIntervalRoundTrip: the denied set's prefixes survive the kernel's
// representation (start and end keys), merged where they overlap.
func TestIntervalRoundTrip(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/32"),
		netip.MustParsePrefix("192.168.0.0/24"), netip.MustParsePrefix("192.168.1.0/24"),
		netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"),
	}
	got := fmt.Sprint(rangesOf(intervalElements(in)))
	if got != "[10.0.0.0/8 127.0.0.1/32 192.168.0.0/23]" {
		t.Fatalf("round trip: %s", got)
	}
}

func TestResolvConf(t *testing.T) {
	dir := t.TempDir()
	loop := filepath.Join(dir, "loop")
	os.WriteFile(loop, []byte("nameserver 127.0.0.53\noptions edns0\nsearch corp\n"), 0o644)
	up := filepath.Join(dir, "upstream")
	os.WriteFile(up, []byte("nameserver 10.0.0.2\nnameserver ::1\n"), 0o644)
	conf, why := resolvConf(nil, loop, up)
	if why != "" || !strings.Contains(conf, "nameserver 10.0.0.2\n") || strings.Contains(conf, "127.0.0.53") || !strings.Contains(conf, "search corp") {
		t.Fatalf("%q %q", conf, why)
	}
	if _, why := resolvConf(nil, loop); !strings.Contains(why, "127.0.0.53") {
		t.Fatalf("no nameserver: %q", why)
	}
	if conf, _ := resolvConf([]netip.Addr{netip.MustParseAddr("9.9.9.9")}, loop); !strings.Contains(conf, "nameserver 9.9.9.9\n") || strings.Contains(conf, "127.0.0.53") {
		t.Fatalf("configured: %q", conf)
	}
}
