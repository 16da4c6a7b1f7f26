package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
	"github.com/scrapethis/scrapethis/archive"
	"github.com/scrapethis/scrapethis/db"
	"github.com/scrapethis/scrapethis/storage"
	"github.com/scrapethis/scrapethis/tasks"
)

// MaxConcurrentUploads bounds the archives held in memory at once; more
// uploads wait for a turn.
const MaxConcurrentUploads = 4

func projectParam(r *http.Request) (string, error) {
	name := httprouter.ParamsFromContext(r.Context()).ByName("name")
	if !scrapethis.ValidProjectName(name) {
		return "", scrapethis.Errorf(scrapethis.ENotFound, "Project not found")
	}
	return name, nil
}

// uploadVersion stores an archive as a new version of the project (made on
// its first upload), or answers the version that has the same bytes.
// Everything is checked before anything is stored.
func (s *Server) uploadVersion(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	name := httprouter.ParamsFromContext(ctx).ByName("name")
	if !scrapethis.ValidProjectName(name) {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid project name %q: a letter or digit, then up to 63 letters, digits, '.', '_' or '-'", name)
	}
	q := r.URL.Query()
	label := q.Get("label")
	if q.Has("label") && !scrapethis.ValidProjectName(label) {
		return scrapethis.Errorf(scrapethis.EInvalid, "Invalid label %q: a letter or digit, then up to 63 letters, digits, '.', '_' or '-'", label)
	}
	select {
	case s.uploads <- struct{}{}:
		defer func() { <-s.uploads }()
	case <-ctx.Done():
		return fmt.Errorf("wait for an upload slot: %w", ctx.Err())
	}
	limit := s.limits().MaxArchiveBytes
	// A big archive on a slow link takes longer than a request may.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(UploadReadTimeout))
	rc.SetWriteDeadline(time.Now().Add(UploadReadTimeout + RequestWriteTimeout))
	if r.ContentLength > limit {
		return errTooLarge(limit)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return errTooLarge(limit)
	case err != nil:
		return fmt.Errorf("read archive: %w", err)
	case len(data) == 0:
		return scrapethis.Errorf(scrapethis.EInvalid, "Empty body: send the project archive (tar.gz or zip) as the request body")
	}
	proj, err := archive.Check(ctx, bytes.NewReader(data), int64(len(data)), r.Header.Get("Content-Type"), s.limits())
	if err != nil {
		return err
	}
	sum := storage.Sum(data)
	if err := s.archives.Put(ctx, sum, data); err != nil {
		return err
	}
	v, created, retried, err := s.db.CreateVersion(ctx, db.NewVersion{
		UserID: userID(ctx), Project: name, Label: label, SHA256: sum, SizeBytes: int64(len(data)),
		ContentType: proj.Format.ContentType(), Kind: string(proj.Kind), SettingsModule: proj.SettingsModule,
	})
	if err != nil {
		return err
	}
	if created || retried {
		s.enqueueInspect(ctx, v)
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.log.Info("version uploaded", "user_id", v.UserID, "project", v.Project, "version", v.Label, "sha256", sum, "bytes", len(data))
	}
	writeJSON(w, status, toVersionJSON(v))
	return nil
}

func errTooLarge(limit int64) error {
	return scrapethis.Errorf(scrapethis.ETooLarge, "Archive is larger than the upload limit (%d MiB)", limit>>20)
}

func (s *Server) limits() archive.Limits {
	l := s.ArchiveLimits
	if l.MaxArchiveBytes <= 0 {
		l.MaxArchiveBytes = archive.DefaultMaxArchiveBytes
	}
	return l
}

// enqueueInspect hands the version to the workers; a failure loses
// nothing: workers re-enqueue versions left building.
func (s *Server) enqueueInspect(ctx context.Context, v scrapethis.Version) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if _, err := s.queuer.EnqueueInspect(ctx, tasks.InspectPayload{VersionID: v.ID, Project: v.Project, Label: v.Label}); err != nil {
		s.log.Warn("enqueue inspection failed; workers will retry", "version_id", v.ID, "project", v.Project, "err", err)
	}
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) error {
	list, err := s.db.Projects(r.Context(), userID(r.Context()))
	if err != nil {
		return err
	}
	out := make([]projectJSON, len(list))
	for i, p := range list {
		out[i] = toProjectJSON(p)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) error {
	name, err := projectParam(r)
	if err != nil {
		return err
	}
	p, err := s.db.Project(r.Context(), userID(r.Context()), name)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toProjectJSON(p))
	return nil
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request) error {
	name, err := projectParam(r)
	if err != nil {
		return err
	}
	list, err := s.db.Versions(r.Context(), userID(r.Context()), name)
	if err != nil {
		return err
	}
	out := make([]versionJSON, len(list))
	for i, v := range list {
		out[i] = toVersionJSON(v)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// getVersion answers a version by its id (or its label).
func (s *Server) getVersion(w http.ResponseWriter, r *http.Request) error {
	name, err := projectParam(r)
	if err != nil {
		return err
	}
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	if !canonicalUUID(id) && !scrapethis.ValidProjectName(id) {
		return scrapethis.Errorf(scrapethis.ENotFound, "Version not found")
	}
	v, err := s.db.Version(r.Context(), userID(r.Context()), name, id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toVersionJSON(v))
	return nil
}

// deleteProject removes the project, its spiders and schedules, and the
// archives nothing else uses; 409 while one of its jobs is unfinished.
func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) error {
	name, err := projectParam(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	unused, err := s.db.DeleteProject(ctx, userID(ctx), name)
	if err != nil {
		return err
	}
	for _, sum := range unused {
		if err := s.archives.Delete(context.WithoutCancel(ctx), sum); err != nil {
			s.log.Warn("archive of a deleted project not removed", "sha256", sum, "err", err)
		}
	}
	s.log.Info("project deleted", "user_id", userID(ctx), "project", name)
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Project deleted"})
	return nil
}
