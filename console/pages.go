package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/scrapethis/scrapethis"
)

// pageSize is how many jobs a page of the jobs list shows.
const pageSize = 50

// itemsShown is how many items the job page's table shows; the downloads
// have them all.
const itemsShown = 100

// logShown is how many log lines the job page renders; the log download
// (and the live follow) have them all.
const logShown = 2000

// ---- jobs ----

func (c *Console) jobs(p *page) error {
	q := p.r.URL.Query()
	f := scrapethis.JobFilter{UserID: p.uid(), Limit: pageSize}
	var problems []string
	if v := q.Get("status"); v != "" {
		if scrapethis.Status(v).Valid() {
			f.Status = scrapethis.Status(v)
		} else {
			problems = append(problems, "Unknown status "+strconv.Quote(v)+": showing every status.")
		}
	}
	if v := q.Get("spider"); v != "" {
		if canonicalUUID(v) {
			f.SpiderID = v
		} else {
			problems = append(problems, "Unknown spider: showing every spider.")
		}
	}
	if v := q.Get("before"); v != "" {
		cur, ok := parseCursor(v)
		if !ok {
			problems = append(problems, "That page link is not valid: showing the newest jobs.")
		} else {
			f.Before = &cur
		}
	}
	jobs, err := c.db.Jobs(p.ctx(), f)
	if err != nil {
		return err
	}
	spiders, err := c.db.Spiders(p.ctx(), p.uid())
	if err != nil {
		return err
	}
	data := map[string]any{"Title": "Jobs", "Jobs": jobs, "Spiders": spiders, "Filter": f,
		"Statuses": scrapethis.Statuses, "Problems": problems, "Paged": f.Before != nil}
	if len(jobs) == pageSize {
		last := jobs[len(jobs)-1]
		next := url.Values{}
		if f.Status != "" {
			next.Set("status", string(f.Status))
		}
		if f.SpiderID != "" {
			next.Set("spider", f.SpiderID)
		}
		next.Set("before", formatCursor(scrapethis.JobCursor{CreatedAt: last.CreatedAt, ID: last.ID}))
		data["Older"] = "/jobs?" + next.Encode()
	}
	first := url.Values{}
	if f.Status != "" {
		first.Set("status", string(f.Status))
	}
	if f.SpiderID != "" {
		first.Set("spider", f.SpiderID)
	}
	data["Newest"] = "/jobs?" + first.Encode()
	c.render(p, http.StatusOK, "jobs", data)
	return nil
}

func canonicalUUID(s string) bool { return scrapethis.CanonicalID(s) }

func formatCursor(c scrapethis.JobCursor) string { return c.Encode() }

func parseCursor(s string) (scrapethis.JobCursor, bool) {
	c, err := scrapethis.ParseJobCursor(s)
	return c, err == nil
}

// liveJobs answers the status, item count and run time of the listed jobs
// of the user (?id=...), for the jobs page's live updates.
func (c *Console) liveJobs(p *page) error {
	ids := p.r.URL.Query()["id"]
	if len(ids) > pageSize {
		ids = ids[:pageSize]
	}
	jobs, err := c.db.JobsByIDs(p.ctx(), p.uid(), ids)
	if err != nil {
		return err
	}
	type live struct {
		Status   string `json:"status"`
		Items    int64  `json:"items"`
		Duration string `json:"duration"`
		Final    bool   `json:"final"`
	}
	out := map[string]live{}
	for _, j := range jobs {
		out[j.ID] = live{Status: string(j.Status), Items: j.ItemsScraped, Duration: duration(j), Final: j.Status.Final()}
	}
	body, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encode live jobs: %w", err)
	}
	c.send(p, http.StatusOK, "application/json", body)
	return nil
}

// job is a job's page: its summary, items and log.
func (c *Console) job(p *page) error {
	j, err := c.db.Job(p.ctx(), p.uid(), p.param("id"))
	if err != nil {
		return err
	}
	data := map[string]any{"Title": "Job " + shortID(j.ID) + " · " + j.SpiderName, "Job": j}
	if err := c.addItems(p, j, data); err != nil {
		return err
	}
	lines, err := c.db.Logs(p.ctx(), j.ID, -1, logShown+1)
	if err != nil {
		return err
	}
	var log strings.Builder
	for i, l := range lines {
		if i == logShown {
			data["LogCut"] = true
			break
		}
		log.WriteString(l.Line)
		log.WriteByte('\n')
	}
	data["Log"] = log.String()
	c.render(p, http.StatusOK, "job", data)
	return nil
}

// jobSummary is the job page's live part: status, timings, stats.
func (c *Console) jobSummary(p *page) error {
	j, err := c.db.Job(p.ctx(), p.uid(), p.param("id"))
	if err != nil {
		return err
	}
	return c.fragment(p, "_summary", map[string]any{"Job": j})
}

// jobItemsTable is the job page's items table alone, swapped in when a
// job ends.
func (c *Console) jobItemsTable(p *page) error {
	j, err := c.db.Job(p.ctx(), p.uid(), p.param("id"))
	if err != nil {
		return err
	}
	data := map[string]any{"Job": j}
	if err := c.addItems(p, j, data); err != nil {
		return err
	}
	return c.fragment(p, "_items", data)
}

// itemTable is the first items as rows under the union of their keys.
type itemTable struct {
	Columns []string
	Rows    [][]json.RawMessage
	Plain   []json.RawMessage // items that are not JSON objects
}

func (c *Console) addItems(p *page, j scrapethis.Job, data map[string]any) error {
	items, err := c.db.FirstItems(p.ctx(), j.ID, itemsShown)
	if err != nil {
		return err
	}
	data["Items"] = tableOf(items)
	data["ItemsShown"] = len(items)
	return nil
}

func tableOf(items []json.RawMessage) itemTable {
	var t itemTable
	index := map[string]int{}
	var objs []map[string]json.RawMessage
	for _, it := range items {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(it, &m); err != nil || m == nil {
			t.Plain = append(t.Plain, it)
			continue
		}
		// Keys in the item's own order, as the spider wrote them.
		dec := json.NewDecoder(bytes.NewReader(it))
		dec.Token()
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			k, _ := tok.(string)
			if _, seen := index[k]; !seen {
				index[k] = len(t.Columns)
				t.Columns = append(t.Columns, k)
			}
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				break
			}
		}
		objs = append(objs, m)
	}
	for _, m := range objs {
		row := make([]json.RawMessage, len(t.Columns))
		for k, v := range m {
			row[index[k]] = v
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// download serves a job's items (json, jsonl, csv) or its log as a file,
// through the API's own streams.
func (c *Console) download(p *page) error {
	j, err := c.db.Job(p.ctx(), p.uid(), p.param("id"))
	if err != nil {
		return err
	}
	file := p.param("file")
	var path string
	switch file {
	case "items.json", "items.jsonl", "items.csv":
		path = "/api/v1/jobs/" + j.ID + "/items?format=" + strings.TrimPrefix(file, "items.")
	case "log.txt":
		path = "/api/v1/jobs/" + j.ID + "/logs"
	default:
		return errNotFound
	}
	req, err := http.NewRequestWithContext(p.ctx(), http.MethodGet, path, nil)
	if err != nil {
		return fmt.Errorf("download request: %w", err)
	}
	p.w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="job-%s-%s"`, shortID(j.ID), file))
	p.rendered = true
	c.api.ServeAs(p.w, req, p.uid())
	return nil
}

// jobLog streams a job's log as the API does (?follow=1 until it ends),
// for the job page's live log.
func (c *Console) jobLog(p *page) error {
	j, err := c.db.Job(p.ctx(), p.uid(), p.param("id"))
	if err != nil {
		return err
	}
	path := "/api/v1/jobs/" + j.ID + "/logs"
	if p.r.URL.Query().Get("follow") == "1" {
		path += "?follow=1"
	}
	req, err := http.NewRequestWithContext(p.ctx(), http.MethodGet, path, nil)
	if err != nil {
		return fmt.Errorf("log request: %w", err)
	}
	p.rendered = true
	c.api.ServeAs(p.w, req, p.uid())
	return nil
}

func (c *Console) cancelJob(p *page) error {
	id := p.param("id")
	a, err := c.call(p, http.MethodDelete, "/api/v1/jobs/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	if a.status == http.StatusConflict {
		return c.redirect(p, "/jobs/"+id, "already-ended")
	}
	if err := a.err(); err != nil {
		return err
	}
	return c.redirect(p, "/jobs/"+id, "cancelled")
}

// notices are what a page says after a form did its work, by the code in
// its ?done= parameter: fixed texts, so that a link can never make the
// console say something of someone else's choosing.
var notices = map[string]string{
	"started":          "Job started.",
	"cancelled":        "Job cancelled.",
	"already-ended":    "This job had already ended: there was nothing to cancel.",
	"schedule-created": "Schedule created.",
	"schedule-on":      "Schedule enabled.",
	"schedule-off":     "Schedule disabled.",
	"schedule-deleted": "Schedule deleted.",
}

// redirect sends the browser to path after a POST, with the notice of the
// code shown on the page it lands on.
func (c *Console) redirect(p *page, path, done string) error {
	if done != "" {
		path += "?done=" + done
	}
	http.Redirect(p.w, p.r, path, http.StatusSeeOther)
	p.rendered = true
	return nil
}

// ---- start a job ----

// jobForm is the start-a-job form as typed.
type jobForm struct {
	Spider, Version, Arguments, Settings, MemoryMB string
}

func (c *Console) newJobForm(p *page) error {
	q := p.r.URL.Query()
	return c.renderJobForm(p, http.StatusOK, jobForm{Spider: q.Get("spider"), Arguments: "{}"}, nil)
}

// renderJobForm shows the form with what was typed and, after a refused
// start, the API's message beside the field it names.
func (c *Console) renderJobForm(p *page, status int, f jobForm, problem *formProblem) error {
	spiders, err := c.db.Spiders(p.ctx(), p.uid())
	if err != nil {
		return err
	}
	projects, err := c.db.Projects(p.ctx(), p.uid())
	if err != nil {
		return err
	}
	type versionOption struct{ Value, Label string }
	var versions []versionOption
	for _, pr := range projects {
		vs, err := c.db.Versions(p.ctx(), p.uid(), pr.Name)
		if err != nil {
			return err
		}
		for _, v := range vs {
			if v.Status == scrapethis.VersionReady {
				versions = append(versions, versionOption{v.Label, pr.Name + " " + v.Label + " (" + shortID(v.ID) + ")"})
			}
		}
	}
	c.render(p, status, "newjob", map[string]any{"Title": "Start a job", "Form": f, "Spiders": spiders,
		"Versions": versions, "Problem": problem})
	return nil
}

// formProblem is a refused form's message and the field it is about.
type formProblem struct {
	Field, Message string
}

// fieldOf guesses which field an API message is about, to show it there.
func fieldOf(msg string, fields ...string) string {
	low := strings.ToLower(msg)
	for _, f := range fields {
		if strings.Contains(low, strings.ReplaceAll(f, "_", " ")) || strings.Contains(low, f) {
			return f
		}
	}
	return ""
}

// startJob posts the form to the API as POST /api/v1/jobs would get it.
func (c *Console) startJob(p *page) error {
	form := p.r.PostForm
	f := jobForm{Spider: form.Get("spider"), Version: strings.TrimSpace(form.Get("version")),
		Arguments: form.Get("arguments"), Settings: form.Get("settings"), MemoryMB: strings.TrimSpace(form.Get("memory_mb"))}
	body := map[string]any{"spider_id": f.Spider}
	if f.Version != "" {
		body["version"] = f.Version
	}
	for _, fld := range []struct {
		name, label, value string
	}{{"arguments", "Arguments", f.Arguments}, {"settings", "Settings", f.Settings}} {
		v := strings.TrimSpace(fld.value)
		if v == "" {
			continue
		}
		if !json.Valid([]byte(v)) {
			return c.renderJobForm(p, http.StatusBadRequest, f, &formProblem{fld.name, fld.label + " must be JSON, such as {\"key\": \"value\"}: " + jsonError(v)})
		}
		body[fld.name] = json.RawMessage(v)
	}
	if f.MemoryMB != "" {
		if n, err := strconv.ParseInt(f.MemoryMB, 10, 64); err == nil {
			body["memory_mb"] = n
		} else {
			body["memory_mb"] = f.MemoryMB // the API names the problem
		}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode job: %w", err)
	}
	a, err := c.call(p, http.MethodPost, "/api/v1/jobs", bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if !a.ok() && a.status < 500 {
		msg := a.message()
		return c.renderJobForm(p, a.status, f, &formProblem{fieldOf(msg, "arguments", "settings", "version", "memory_mb", "spider"), msg})
	}
	if err := a.err(); err != nil {
		return err
	}
	var created struct {
		JobID string `json:"jobId"`
	}
	if err := json.Unmarshal(a.body.Bytes(), &created); err != nil || created.JobID == "" {
		return fmt.Errorf("decode created job %q: %v", a.body.String(), err)
	}
	return c.redirect(p, "/jobs/"+created.JobID, "started")
}

func jsonError(s string) string {
	var v any
	err := json.Unmarshal([]byte(s), &v)
	if err == nil {
		return ""
	}
	return err.Error()
}

// ---- spiders and projects ----

func (c *Console) spiders(p *page) error {
	spiders, err := c.db.Spiders(p.ctx(), p.uid())
	if err != nil {
		return err
	}
	c.render(p, http.StatusOK, "spiders", map[string]any{"Title": "Spiders", "Spiders": spiders})
	return nil
}

func (c *Console) projects(p *page) error {
	projects, err := c.db.Projects(p.ctx(), p.uid())
	if err != nil {
		return err
	}
	c.render(p, http.StatusOK, "projects", map[string]any{"Title": "Projects", "Projects": projects})
	return nil
}

func (c *Console) project(p *page) error {
	name := p.param("name")
	pr, err := c.db.Project(p.ctx(), p.uid(), name)
	if err != nil {
		return err
	}
	versions, err := c.db.Versions(p.ctx(), p.uid(), name)
	if err != nil {
		return err
	}
	c.render(p, http.StatusOK, "project", map[string]any{"Title": "Project " + pr.Name, "Project": pr, "Versions": versions})
	return nil
}

// ---- schedules ----

// scheduleForm is the new-schedule form as typed.
type scheduleForm struct {
	Spider, Cron, Timezone, Arguments string
	Enabled                           bool
}

func (c *Console) schedules(p *page) error {
	return c.renderSchedules(p, http.StatusOK, scheduleForm{Timezone: "UTC", Arguments: "{}", Enabled: true}, nil)
}

func (c *Console) renderSchedules(p *page, status int, f scheduleForm, problem *formProblem) error {
	list, err := c.db.Schedules(p.ctx(), p.uid())
	if err != nil {
		return err
	}
	spiders, err := c.db.Spiders(p.ctx(), p.uid())
	if err != nil {
		return err
	}
	c.render(p, status, "schedules", map[string]any{"Title": "Schedules", "Schedules": list, "Spiders": spiders,
		"Form": f, "Problem": problem})
	return nil
}

func (c *Console) createSchedule(p *page) error {
	form := p.r.PostForm
	f := scheduleForm{Spider: form.Get("spider"), Cron: strings.TrimSpace(form.Get("cron")),
		Timezone: strings.TrimSpace(form.Get("timezone")), Arguments: form.Get("arguments"), Enabled: form.Get("enabled") == "on"}
	body := map[string]any{"spider_id": f.Spider, "cron": f.Cron, "enabled": f.Enabled}
	if f.Timezone != "" {
		body["timezone"] = f.Timezone
	}
	if v := strings.TrimSpace(f.Arguments); v != "" {
		if !json.Valid([]byte(v)) {
			return c.renderSchedules(p, http.StatusBadRequest, f, &formProblem{"arguments", "Arguments must be JSON, such as {\"key\": \"value\"}: " + jsonError(v)})
		}
		body["arguments"] = json.RawMessage(v)
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode schedule: %w", err)
	}
	a, err := c.call(p, http.MethodPost, "/api/v1/schedules", bytes.NewReader(raw))
	if err != nil {
		return err
	}
	if !a.ok() && a.status < 500 {
		msg := a.message()
		return c.renderSchedules(p, a.status, f, &formProblem{fieldOf(msg, "cron", "timezone", "arguments", "spider"), msg})
	}
	if err := a.err(); err != nil {
		return err
	}
	return c.redirect(p, "/schedules", "schedule-created")
}

func (c *Console) setScheduleEnabled(p *page) error {
	enabled := p.r.PostForm.Get("enabled") == "true"
	body, _ := json.Marshal(map[string]bool{"enabled": enabled})
	a, err := c.call(p, http.MethodPatch, "/api/v1/schedules/"+url.PathEscape(p.param("id")), bytes.NewReader(body))
	if err != nil {
		return err
	}
	if err := a.err(); err != nil {
		return err
	}
	notice := "schedule-off"
	if enabled {
		notice = "schedule-on"
	}
	return c.redirect(p, "/schedules", notice)
}

func (c *Console) deleteSchedule(p *page) error {
	a, err := c.call(p, http.MethodDelete, "/api/v1/schedules/"+url.PathEscape(p.param("id")), nil)
	if err != nil {
		return err
	}
	if err := a.err(); err != nil {
		return err
	}
	return c.redirect(p, "/schedules", "schedule-deleted")
}
