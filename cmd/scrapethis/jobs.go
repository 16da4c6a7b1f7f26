package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const jobsUsage = `usage: scrapethis jobs <command> [flags]

  start SPIDER [-a NAME=VALUE]... [-s SETTING=VALUE]... [--version V] [--priority N]
               [--memory-mb N] [--timeout-seconds N] [--idempotency-key K]
                       start a job; prints its id
  list [--status S] [--spider NAME | --spider-id ID] [--limit N]   your jobs, newest first
  get ID               a job, as the API's JSON
  cancel ID            cancel a job
  logs ID [-f]         a job's log; -f follows it until the job ends
  items ID [--format json|jsonl|csv] [--offset N] [--limit N]   a job's items

Every command takes --json: the API's answer as JSON instead of text for people.
Reads SCRAPETHIS_URL (default http://127.0.0.1:8080) and SCRAPETHIS_API_KEY.
`

// cmdJobs is the jobs client: one subcommand per API call of API.md Part A
// and C4, each exiting non-zero with the API's message on failure.
func cmdJobs(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, jobsUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("jobs "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, jobsUsage); fs.PrintDefaults() }
	var run func(ctx context.Context, c *apiClient, pos []string) error
	var positional int // how many positional arguments sub takes
	asJSON := fs.Bool("json", false, "print the API's answer as JSON")
	switch sub {
	case "start":
		positional = 1
		var body jobStart
		arguments, settings := pairs{}, pairs{}
		fs.Var(arguments, "a", "a spider argument NAME=VALUE (repeatable)")
		fs.Var(settings, "s", "a Scrapy setting NAME=VALUE for this job (repeatable)")
		fs.StringVar(&body.Version, "version", "", "version id or label of the spider's project (default: its latest ready version)")
		fs.IntVar(&body.MemoryMB, "memory-mb", 0, "memory limit in MiB (default: the operator's)")
		fs.IntVar(&body.TimeoutSeconds, "timeout-seconds", 0, "stop the job after this many seconds")
		fs.Func("priority", "0 (lowest) to 4 (highest); default the API's 2", func(v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a whole number", v)
			}
			body.Priority = &n
			return nil
		})
		idem := fs.String("idempotency-key", "", "send this Idempotency-Key: a retry with the same key starts no second job")
		run = func(ctx context.Context, c *apiClient, pos []string) error {
			body.SpiderName, body.Arguments, body.Settings = pos[0], arguments, settings
			raw, err := c.startJob(ctx, body, *idem)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(stdout, raw)
			}
			var out struct {
				JobID string `json:"jobId"`
			}
			if err := json.Unmarshal(raw, &out); err != nil || out.JobID == "" {
				return fmt.Errorf("POST /api/v1/jobs: no job id in the answer %s", raw)
			}
			fmt.Fprintln(stdout, out.JobID)
			return nil
		}
	case "list":
		status := fs.String("status", "", "pending, running, finished, cancelled or error")
		spider := fs.String("spider-id", "", "only this spider's jobs")
		spiderName := fs.String("spider", "", "only the jobs of the spider with this name")
		limit := fs.Int("limit", 0, "at most this many (default: the API's 50)")
		run = func(ctx context.Context, c *apiClient, _ []string) error {
			q := url.Values{}
			setQuery(q, "status", *status)
			setQuery(q, "spider_id", *spider)
			if *spiderName != "" {
				if *spider != "" {
					return errors.New("give --spider or --spider-id, not both")
				}
				id, err := c.spiderID(ctx, *spiderName)
				if err != nil {
					return err
				}
				q.Set("spider_id", id)
			}
			if *limit > 0 {
				q.Set("limit", strconv.Itoa(*limit))
			}
			rows, raw, err := c.jobs(ctx, q)
			if err != nil {
				return err
			}
			if *asJSON {
				return printJSON(stdout, raw)
			}
			printJobs(stdout, rows)
			return nil
		}
	case "get":
		positional = 1
		run = func(ctx context.Context, c *apiClient, pos []string) error {
			raw, err := c.job(ctx, pos[0])
			if err != nil {
				return err
			}
			return printJSON(stdout, raw)
		}
	case "cancel":
		positional = 1
		run = func(ctx context.Context, c *apiClient, pos []string) error {
			msg, err := c.cancelJob(ctx, pos[0])
			switch {
			case err != nil:
				return err
			case *asJSON:
				raw, _ := json.Marshal(map[string]any{"ok": true, "message": msg})
				return printJSON(stdout, raw)
			}
			fmt.Fprintln(stdout, msg)
			return nil
		}
	case "logs":
		positional = 1
		follow := fs.Bool("f", false, "follow the log until the job ends")
		run = func(ctx context.Context, c *apiClient, pos []string) error {
			q := url.Values{}
			if *follow {
				q.Set("follow", "1")
			}
			return c.stream(ctx, jobPath(pos[0])+"/logs", q, stdout)
		}
	case "items":
		positional = 1
		format := fs.String("format", "", "json (default), jsonl or csv")
		offset := fs.Int("offset", 0, "skip this many items")
		limit := fs.Int("limit", 0, "at most this many items")
		run = func(ctx context.Context, c *apiClient, pos []string) error {
			q := url.Values{}
			setQuery(q, "format", *format)
			if *offset > 0 {
				q.Set("offset", strconv.Itoa(*offset))
			}
			if *limit > 0 {
				q.Set("limit", strconv.Itoa(*limit))
			}
			return c.stream(ctx, jobPath(pos[0])+"/items", q, stdout)
		}
	default:
		fmt.Fprint(stderr, jobsUsage)
		return fmt.Errorf("unknown jobs command %q", sub)
	}
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(pos) != positional {
		fs.Usage()
		return fmt.Errorf("jobs %s takes %d argument(s), got %d", sub, positional, len(pos))
	}
	c, err := clientFromEnv(getenv)
	if err != nil {
		return err
	}
	return run(ctx, c, pos)
}

// printJSON writes an API answer indented, one value per call.
func printJSON(w io.Writer, raw json.RawMessage) error {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return fmt.Errorf("the answer is not valid JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}

func setQuery(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func printJobs(w io.Writer, rows []jobRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tSPIDER\tITEMS\tCREATED\tERROR")
	for _, j := range rows {
		reason := ""
		if j.Error != nil {
			reason = *j.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", j.ID, j.Status, j.Spider.Name, j.ItemsScraped,
			j.CreatedAt.UTC().Format(time.RFC3339), reason)
	}
	tw.Flush()
}

// pairs is a repeatable NAME=VALUE flag.
type pairs map[string]string

func (p pairs) String() string { return "" }

func (p pairs) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q is not NAME=VALUE", s)
	}
	if _, dup := p[k]; dup {
		return fmt.Errorf("%s is given twice", k)
	}
	p[k] = v
	return nil
}
