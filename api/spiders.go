package api

import (
	"net/http"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
)

type createSpiderRequest struct {
	Name     *string `json:"name"`
	RepoPath *string `json:"repo_path"`
}

func (s *Server) createSpider(w http.ResponseWriter, r *http.Request) {
	var req createSpiderRequest
	if err := decodeBody(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	name, err := validSpiderName(req.Name)
	if err != nil {
		writeError(w, err)
		return
	}
	repoPath, err := ValidRepoPath(req.RepoPath)
	if err != nil {
		writeError(w, err)
		return
	}
	sp, err := s.db.CreateSpider(r.Context(), userID(r.Context()), name, repoPath)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toSpiderJSON(sp))
}

func validSpiderName(p *string) (string, error) {
	if p == nil || strings.TrimSpace(*p) == "" {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "Missing name")
	}
	name := strings.TrimSpace(*p)
	if len(name) > 200 {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "name is longer than 200 bytes")
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return "", scrapethis.Errorf(scrapethis.EInvalid, "name may not contain control characters")
		}
	}
	return name, nil
}

// ValidRepoPath checks that a spider's path is relative to the spiders
// directory and cannot leave it, and returns it cleaned.
func ValidRepoPath(p *string) (string, error) {
	if p == nil || *p == "" {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "Missing repo_path")
	}
	path := *p
	if len(path) > 1024 || strings.ContainsRune(path, 0) || strings.Contains(path, `\`) {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "repo_path is not a valid path")
	}
	if filepath.IsAbs(path) || !filepath.IsLocal(path) {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "repo_path must be relative to the spiders directory and stay inside it")
	}
	clean := filepath.ToSlash(filepath.Clean(path))
	if clean == "." {
		return "", scrapethis.Errorf(scrapethis.EInvalid, "repo_path must name a file")
	}
	return clean, nil
}

func (s *Server) listSpiders(w http.ResponseWriter, r *http.Request) {
	list, err := s.db.Spiders(r.Context(), userID(r.Context()))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]spiderJSON, len(list))
	for i, sp := range list {
		out[i] = toSpiderJSON(sp)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getSpider(w http.ResponseWriter, r *http.Request) {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	sp, err := s.db.Spider(r.Context(), userID(r.Context()), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toSpiderJSON(sp))
}

func (s *Server) deleteSpider(w http.ResponseWriter, r *http.Request) {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	if err := s.db.DeleteSpider(r.Context(), userID(r.Context()), id); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Spider deleted"})
}
