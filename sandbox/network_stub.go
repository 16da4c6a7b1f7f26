//go:build sandboxinit

package sandbox

import (
	"errors"
	"log/slog"
)

// The small init binary (-tags sandboxinit) never wires a network: the
// worker does (network_host.go).

var errNoHostNetwork = errors.New("this binary was built without the isolated network's host side (-tags sandboxinit)")

func setupHostNetwork(Config, string, *slog.Logger) (*hostNetwork, error) {
	return nil, errNoHostNetwork
}

func (*hostNetwork) setupJobNetwork(int, int) (*jobNet, error) { return nil, errNoHostNetwork }

func (*jobNet) remove() error { return nil }

func guardPlatform(Config, string) error { return errNoHostNetwork }
