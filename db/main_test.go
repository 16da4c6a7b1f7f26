package db_test

import (
	"os"
	"testing"

	"github.com/scrapethis/scrapethis/internal/testenv"
)

// TestMain drops the package's template database when its tests end.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
