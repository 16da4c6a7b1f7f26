package sandbox

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The isolated network (Config.Network = NetworkIsolated): every job's init
// starts in a network namespace of its own, which the launcher (root, in
// the host's namespace) wires to the host with a veth pair before anything
// of the job's runs. Each job gets a /30 of NetworkRange, chosen by its uid
// (unique on the host), so concurrent jobs and several workers of one host
// never collide: the host end is .1, the job's end (eth0) .2, its default
// route via the host end. One nftables table, inet scrapethis, shared by
// every worker of the host, masquerades the jobs' traffic out of the host
// and drops everything from a job to an address of the host's own (its
// loopback services, its addresses, the veth ends), to the denied prefixes
// (the platform's Postgres and Redis, the operator's list), to another job,
// and all IPv6 from the jobs (they have IPv4 only).

// DefaultNetworkRange is where jobs' /30s come from by default.
var DefaultNetworkRange = netip.MustParsePrefix("10.213.0.0/16")

const (
	// vethPrefix starts the host end's name of every job's veth pair
	// ("stj" + uid); the nftables rules match jobs by it.
	vethPrefix = "stj"
	nftTable   = "scrapethis"
	// netReady is the byte the launcher sends the init once the job's
	// network is up; the init runs nothing of the job's before it.
	netReady = 'n'
)

// jobNet is one job's addresses.
type jobNet struct {
	host, job netip.Addr // the host end (gateway) and the job's eth0
	bits      int        // 30
	link      string     // the host end's name
}

// netFor is the /30 of uid in r: uid modulo the number of /30s, so that
// uids of one range (validate checks it fits) never share one.
func netFor(r netip.Prefix, uid int) jobNet {
	blocks := uint32(1) << (30 - r.Bits())
	base := binary.BigEndian.Uint32(r.Masked().Addr().AsSlice())
	n := base + 4*(uint32(uid)%blocks)
	return jobNet{host: v4(n + 1), job: v4(n + 2), bits: 30, link: vethPrefix + strconv.Itoa(uid)}
}

func v4(n uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// validateNetwork checks the isolated network's configuration.
func (c Config) validateNetwork() []error {
	var errs []error
	r := c.networkRange()
	if !r.Addr().Is4() || r.Bits() > 30 {
		errs = append(errs, fmt.Errorf("network range %s is not an IPv4 prefix of at least a /30", r))
	} else if blocks := 1 << (30 - r.Bits()); c.UIDLast-c.UIDFirst+1 > blocks {
		errs = append(errs, fmt.Errorf("network range %s has %d /30s for %d uids; widen it or narrow the uid range", r, blocks, c.UIDLast-c.UIDFirst+1))
	}
	for _, p := range c.NetworkDeny {
		if !p.IsValid() {
			errs = append(errs, errors.New("an invalid denied prefix"))
		}
	}
	for _, a := range c.DNS {
		if !a.Is4() || a.IsLoopback() {
			errs = append(errs, fmt.Errorf("DNS server %s: jobs reach IPv4 servers off the host only", a))
		}
	}
	return errs
}

func (c Config) networkRange() netip.Prefix {
	if c.NetworkRange.IsValid() {
		return c.NetworkRange.Masked()
	}
	return DefaultNetworkRange
}

// hostNetwork is what the launcher prepared on the host for isolated jobs.
type hostNetwork struct {
	rng        netip.Prefix
	resolvConf string // the sandbox's /etc/resolv.conf
	mtu        int    // of the host's default route's device; 0 is the kernel's default
}

// span is an IPv4 range [lo, hi], both included.
type span struct{ lo, hi uint32 }

// merge sorts spans and joins overlapping and adjacent ones: an interval
// set takes disjoint ones only.
func merge(spans []span) []span {
	slices.SortFunc(spans, func(a, b span) int {
		if a.lo != b.lo {
			if a.lo < b.lo {
				return -1
			}
			return 1
		}
		return 0
	})
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && (s.lo <= out[n-1].hi || s.lo == out[n-1].hi+1) {
			out[n-1].hi = max(out[n-1].hi, s.hi)
			continue
		}
		out = append(out, s)
	}
	return out
}

func spansOf(ps []netip.Prefix) []span {
	var out []span
	for _, p := range ps {
		if !p.Addr().Is4() {
			continue // jobs have no IPv6
		}
		p = p.Masked()
		lo := binary.BigEndian.Uint32(p.Addr().AsSlice())
		size := uint64(1) << (32 - p.Bits())
		out = append(out, span{lo, uint32(uint64(lo) + size - 1)})
	}
	return out
}

// prefixesOf covers [lo, hi] with prefixes.
func prefixesOf(lo, hi uint32) []netip.Prefix {
	var out []netip.Prefix
	for {
		bits := 32
		for bits > 0 {
			size := uint64(1) << (32 - (bits - 1))
			if uint64(lo)%size != 0 || uint64(lo)+size-1 > uint64(hi) {
				break
			}
			bits--
		}
		out = append(out, netip.PrefixFrom(v4(lo), bits))
		end := uint64(lo) + uint64(1)<<(32-bits) - 1
		if end >= uint64(hi) {
			return out
		}
		lo = uint32(end + 1)
	}
}

// resolvConf is the sandbox's /etc/resolv.conf: dns if given, else the
// first host file's nameservers that a job can reach (not loopback: the
// job's loopback is its own), with the host's search and options lines.
// why says why there is no nameserver.
func resolvConf(dns []netip.Addr, files ...string) (conf, why string) {
	var other []string
	var servers []string
	var skipped []string
	for i, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var found []string
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 {
				continue
			}
			switch fields[0] {
			case "nameserver":
				a, err := netip.ParseAddr(fields[1])
				if err != nil || !a.Is4() || a.IsLoopback() || a.IsUnspecified() {
					skipped = append(skipped, fields[1])
					continue
				}
				found = append(found, a.String())
			case "search", "domain", "options":
				if i == 0 || other == nil {
					other = append(other, sc.Text())
				}
			}
		}
		if len(found) > 0 {
			servers = found
			break
		}
	}
	if len(dns) > 0 {
		servers = nil
		for _, a := range dns {
			servers = append(servers, a.String())
		}
	}
	var b strings.Builder
	b.WriteString("# written by the ScrapeThis sandbox (isolated network)\n")
	for _, s := range servers {
		b.WriteString("nameserver " + s + "\n")
	}
	for _, o := range other {
		b.WriteString(o + "\n")
	}
	if len(servers) == 0 {
		why = "the host's resolv.conf lists no nameserver a job can reach"
		if len(skipped) > 0 {
			why = "the host's nameservers (" + strings.Join(skipped, ", ") + ") are on its loopback, or IPv6"
		}
	}
	return b.String(), why
}
