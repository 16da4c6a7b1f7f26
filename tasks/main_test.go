package tasks_test

import (
	"os"
	"testing"

	"github.com/scrapethis/scrapethis/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
