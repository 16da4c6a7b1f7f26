// Command scrapethis-init is the spider sandbox's init as a small binary of
// its own (sandbox.RunInit and nothing else). The worker runs it for every
// sandboxed job when it sits beside the scrapethis binary (`make build`
// puts it there): it starts in about a millisecond, where `scrapethis
// sandbox-init` first initialises every package of the 40 MB program
// (about 3 ms more per job). Without it the worker falls back to
// `scrapethis sandbox-init`.
package main

import (
	"os"

	"github.com/scrapethis/scrapethis/sandbox"
)

func main() { os.Exit(sandbox.RunInit()) }
