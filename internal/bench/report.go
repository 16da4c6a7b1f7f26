package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one line of the results table.
//
// Ratio compares Value with Baseline so that higher is better and 1.0 is
// "as good as the raw baseline": Value/Baseline for rates, Baseline/Value
// for latencies and costs. Rows without a raw baseline leave both nil.
type Row struct {
	Name     string   `json:"name"`
	Value    float64  `json:"value"`
	Unit     string   `json:"unit"`
	Baseline *float64 `json:"baseline"`
	Ratio    *float64 `json:"ratio"`
	Target   string   `json:"target"` // "" when the issue sets none
	Met      *bool    `json:"met"`    // nil when there is no target
	// Others is the share of the machine's CPU that processes other than
	// the bench, the API, the worker, Postgres and Redis used while the
	// row was measured, in percent: above a few percent, the row is noisy.
	Others float64 `json:"others_cpu_pct"`
	Note   string  `json:"note,omitempty"`
}

// target is a goal on a row's value or ratio.
type target struct {
	onRatio bool
	atLeast bool
	limit   float64
}

func atLeast(v float64) *target      { return &target{atLeast: true, limit: v} }
func atMost(v float64) *target       { return &target{limit: v} }
func ratioAtLeast(v float64) *target { return &target{onRatio: true, atLeast: true, limit: v} }

func (t *target) String(unit string) string {
	op := "<="
	if t.atLeast {
		op = ">="
	}
	limit := strconv.FormatFloat(t.limit, 'f', -1, 64)
	if t.onRatio {
		return fmt.Sprintf("ratio %s %s", op, limit)
	}
	return fmt.Sprintf("%s %s %s", op, limit, unit)
}

// noisyPct is the others% from which a row is flagged as noisy.
const noisyPct = 5

// Results collects rows as scenarios produce them.
type Results struct {
	Started  time.Time
	Mode     string         // Config.Mode
	Describe string         // the machine and versions, in one line
	Meta     map[string]any // the machine, versions and sizes
	Rows     []Row
	// prefix starts the name of every row added while it is set, for a
	// scenario run again under other conditions (see fairshare.go).
	prefix string
}

// add appends a row. higherIsBetter says how the ratio is formed; baseline
// may be nil; t may be nil.
func (r *Results) add(name string, value float64, unit string, baseline *float64, higherIsBetter bool, t *target, note string) {
	row := Row{Name: r.prefix + name, Value: round(value), Unit: unit, Note: note}
	if baseline != nil {
		b := round(*baseline)
		row.Baseline = &b
		if *baseline > 0 && value > 0 {
			ratio := value / *baseline
			if !higherIsBetter {
				ratio = *baseline / value
			}
			ratio = math.Round(ratio*1000) / 1000
			row.Ratio = &ratio
		}
	}
	if t != nil {
		row.Target = t.String(unit)
		met := false
		v := value
		if t.onRatio {
			v = math.NaN()
			if row.Ratio != nil {
				v = *row.Ratio
			}
		}
		if !math.IsNaN(v) {
			if t.atLeast {
				met = v >= t.limit
			} else {
				met = v <= t.limit
			}
		}
		row.Met = &met
	}
	r.Rows = append(r.Rows, row)
}

// fail records a scenario that could not run, as an unmet row, so that it
// shows in the table and the gaps rather than vanishing.
func (r *Results) fail(name string, err error) {
	met := false
	r.Rows = append(r.Rows, Row{Name: name, Value: math.NaN(), Unit: "-", Target: "runs", Met: &met, Note: "FAILED: " + err.Error()})
}

func ptr(v float64) *float64 { return &v }

// round keeps three significant decimals for small values and fewer for
// large ones, so the JSON stays readable.
func round(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return v
	}
	switch a := math.Abs(v); {
	case a >= 1000:
		return math.Round(v)
	case a >= 10:
		return math.Round(v*10) / 10
	default:
		return math.Round(v*1000) / 1000
	}
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	switch a := math.Abs(v); {
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 1 || a == 0:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// Print writes a title, the table, the notes, then every unmet target as
// a gap.
func (r *Results) Print(w io.Writer) {
	fmt.Fprintf(w, "\nScrapeThis benchmark (%s), %s, %s\n", r.Mode, r.Started.Format(time.RFC3339), r.Describe)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "name\tvalue\tunit\tbaseline\tratio\ttarget\tmet\tothers%\t")
	for _, row := range r.Rows {
		b, ra, met := "-", "-", ""
		if row.Baseline != nil {
			b = num(*row.Baseline)
		}
		if row.Ratio != nil {
			ra = fmt.Sprintf("%.3f", *row.Ratio)
		}
		if row.Met != nil {
			met = "yes"
			if !*row.Met {
				met = "NO"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t\n", row.Name, num(row.Value), row.Unit, b, ra, row.Target, met, row.Others)
	}
	tw.Flush()
	var notes []string
	for _, row := range r.Rows {
		if row.Note != "" {
			notes = append(notes, fmt.Sprintf("  %s: %s", row.Name, row.Note))
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
	var gaps []string
	for _, row := range r.Rows {
		if row.Met != nil && !*row.Met {
			got := num(row.Value) + " " + row.Unit
			if row.Ratio != nil && strings.HasPrefix(row.Target, "ratio") {
				got = fmt.Sprintf("ratio %.3f (%s vs baseline %s)", *row.Ratio, got, num(*row.Baseline))
			}
			gaps = append(gaps, fmt.Sprintf("  %s: %s, target %s", row.Name, got, row.Target))
		}
	}
	noisy := 0
	for _, row := range r.Rows {
		if row.Others >= noisyPct {
			noisy++
		}
	}
	if noisy > 0 {
		fmt.Fprintf(w, "\n%d rows were measured while other processes used %d%% or more of the CPU (others%%): rerun on a quiet machine before trusting them\n", noisy, noisyPct)
	}
	if len(gaps) == 0 {
		fmt.Fprintln(w, "\nevery target met")
		return
	}
	fmt.Fprintf(w, "\nGAPS (%d targets not met):\n%s\n", len(gaps), strings.Join(gaps, "\n"))
}

// WriteJSON writes the results to path, creating its directory.
func (r *Results) WriteJSON(path string) error {
	rows := append([]Row(nil), r.Rows...)
	for i := range rows {
		if math.IsNaN(rows[i].Value) {
			rows[i].Value = 0 // JSON has no NaN; the note says it failed
		}
	}
	out := struct {
		Started  time.Time      `json:"started"`
		Duration string         `json:"duration"`
		Mode     string         `json:"mode"`
		Quick    bool           `json:"quick"`
		Meta     map[string]any `json:"meta"`
		Rows     []Row          `json:"rows"`
	}{r.Started.UTC(), time.Since(r.Started).Round(time.Millisecond).String(), r.Mode, r.Mode == "quick", r.Meta, rows}
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false) // keep ">=" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	if err := os.WriteFile(path, body.Bytes(), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(rank, 1), len(s))-1]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
