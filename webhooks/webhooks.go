// Package webhooks delivers job events to users' endpoints: signed as
// Standard Webhooks do, from a Postgres outbox that the statements ending a
// job write to (see db), retried with backoff for more than a day, and sent
// only to public addresses unless the operator allows private ones, checked
// on every connection so that DNS cannot rebind a checked name.
package webhooks

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Events are the event types a webhook may ask for; "*" is all of them.
var Events = []string{"job.finished", "job.error", "job.cancelled"}

// ValidEvent reports whether e is an event type or "*".
func ValidEvent(e string) bool {
	if e == "*" {
		return true
	}
	for _, v := range Events {
		if v == e {
			return true
		}
	}
	return false
}

// NewSecret returns a signing secret: "whsec_" and 24 random bytes in base64.
func NewSecret() (string, error) {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:]), nil
}

// Sign returns the webhook-signature header value for a message:
// "v1," and the base64 HMAC-SHA256, keyed with the secret's bytes, of
// "id.timestamp.body".
func Sign(secret, id string, timestamp int64, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return "", fmt.Errorf("webhook secret is not base64: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + strconv.FormatInt(timestamp, 10) + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// Verify checks a webhook-signature header (space-separated signatures)
// against a message, as a receiver does.
func Verify(secret, id string, timestamp int64, body []byte, header string) bool {
	want, err := Sign(secret, id, timestamp, body)
	if err != nil {
		return false
	}
	for _, sig := range strings.Fields(header) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return true
		}
	}
	return false
}

// ErrPrivateAddress refuses a target that is not a public address.
var ErrPrivateAddress = errors.New("refused: the address is private, loopback, link-local or otherwise not public")

// publicAddr reports whether a is a public unicast address.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	switch {
	case !a.IsValid(), a.IsLoopback(), a.IsPrivate(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast(),
		a.IsInterfaceLocalMulticast(), a.IsMulticast(), a.IsUnspecified():
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// nonPublic are ranges netip does not name: "this network", carrier-grade
// NAT, IETF protocol assignments, benchmarking, documentation, reserved,
// broadcast, NAT64 and documentation in IPv6.
var nonPublic = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// CheckURL checks a webhook URL as given: absolute http or https with a
// host, no credentials, and, unless allowPrivate, a host that resolves
// only to public addresses. Delivery checks every connection again.
func CheckURL(ctx context.Context, raw string, allowPrivate bool) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil, len(raw) > 2048:
		return errors.New("url must be an absolute http or https URL")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("url must be an absolute http or https URL")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("url has no host")
	case u.User != nil:
		return errors.New("url must not carry credentials")
	case allowPrivate:
		return nil
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if !publicAddr(a) {
			return ErrPrivateAddress
		}
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
	if err != nil {
		return fmt.Errorf("url host %s does not resolve", host)
	}
	for _, a := range addrs {
		if !publicAddr(a) {
			return ErrPrivateAddress
		}
	}
	return nil
}

// dialControl refuses, at connect time, any address that is not public:
// whatever a name resolved to, this is the address really dialled.
func dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("%s: %w", ap.Addr(), ErrPrivateAddress)
	}
	return nil
}
