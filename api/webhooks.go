package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/webhooks"
)

// EncodeJob is a job's JSON as the API shows it; webhook deliveries carry it.
func EncodeJob(j scrapethis.Job) ([]byte, error) { return json.Marshal(toJobJSON(j)) }

type webhookJSON struct {
	ID        string   `json:"id"`
	URL       string   `json:"url"`
	Events    []string `json:"events"`
	CreatedAt apiTime  `json:"created_at"`
	// Secret is shown once, in the answer to the POST that made it.
	Secret *string `json:"secret,omitempty"`
}

func toWebhookJSON(w db.Webhook) webhookJSON {
	return webhookJSON{ID: w.ID, URL: w.URL, Events: []string(w.Events), CreatedAt: apiTime(w.CreatedAt)}
}

type createWebhookRequest struct {
	URL    optional        `json:"url"`
	Events json.RawMessage `json:"events"`
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request) error {
	var req createWebhookRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	u, err := req.URL.str("url")
	if err != nil {
		return err
	}
	if u == "" {
		return scrapethis.Errorf(scrapethis.EInvalid, "Missing url")
	}
	if err := webhooks.CheckURL(r.Context(), u, s.WebhookAllowPrivate); err != nil {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid url: %s", err)
	}
	events := []string{"*"}
	if len(req.Events) > 0 && string(req.Events) != "null" {
		events = nil
		if err := json.Unmarshal(req.Events, &events); err != nil || len(events) == 0 {
			return scrapethis.Errorf(scrapethis.EInvalid, "Invalid events: must be a non-empty array of %s or *", strings.Join(webhooks.Events, ", "))
		}
		seen := map[string]bool{}
		for _, e := range events {
			if !webhooks.ValidEvent(e) || seen[e] {
				return scrapethis.Errorf(scrapethis.EInvalid, "Invalid events: %q is not one of %s or *, or is given twice", e, strings.Join(webhooks.Events, ", "))
			}
			seen[e] = true
		}
	}
	secret, err := webhooks.NewSecret()
	if err != nil {
		return err
	}
	hook, err := s.db.CreateWebhook(r.Context(), userID(r.Context()), u, events, secret)
	if err != nil {
		return err
	}
	out := toWebhookJSON(hook)
	out.Secret = &hook.Secret
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request) error {
	hooks, err := s.db.Webhooks(r.Context(), userID(r.Context()))
	if err != nil {
		return err
	}
	out := make([]webhookJSON, len(hooks))
	for i, h := range hooks {
		out[i] = toWebhookJSON(h)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func webhookParam(r *http.Request) string {
	return httprouter.ParamsFromContext(r.Context()).ByName("id")
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request) error {
	hook, err := s.db.Webhook(r.Context(), userID(r.Context()), webhookParam(r))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toWebhookJSON(hook))
	return nil
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request) error {
	if err := s.db.DeleteWebhook(r.Context(), userID(r.Context()), webhookParam(r)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Webhook deleted"})
	return nil
}

type attemptJSON struct {
	ID             string  `json:"id"` // the delivery's webhook-id
	Event          string  `json:"event"`
	JobID          string  `json:"job_id"`
	Attempt        int     `json:"attempt"`
	ResponseStatus *int    `json:"response_status"`
	Error          *string `json:"error"`
	DurationMS     int     `json:"duration_ms"`
	CreatedAt      apiTime `json:"created_at"`
}

// webhookDeliveries is the delivery log: attempts, newest first.
func (s *Server) webhookDeliveries(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	limit, err := queryInt(r.URL.Query(), "limit", 1)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = 50
	}
	hook, err := s.db.Webhook(ctx, userID(ctx), webhookParam(r))
	if err != nil {
		return err
	}
	rows, err := s.db.WebhookAttempts(ctx, hook.ID, int(min(limit, db.MaxListLimit)))
	if err != nil {
		return err
	}
	out := make([]attemptJSON, len(rows))
	for i, a := range rows {
		out[i] = attemptJSON{ID: a.DeliveryID, Event: a.Event, JobID: a.JobID, Attempt: a.Attempt,
			DurationMS: a.DurationMS, CreatedAt: apiTime(a.CreatedAt)}
		if a.ResponseStatus.Valid {
			v := int(a.ResponseStatus.Int32)
			out[i].ResponseStatus = &v
		}
		if a.Error.Valid {
			out[i].Error = &a.Error.String
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
