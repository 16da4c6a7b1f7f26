package api

import (
	"net/http"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
)

type createSpiderRequest struct {
	Name     optional `json:"name"`
	RepoPath optional `json:"repo_path"`
}

func (s *Server) createSpider(w http.ResponseWriter, r *http.Request) error {
	var req createSpiderRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.str("name")
	if err != nil {
		return err
	}
	if name, err = scrapethis.ValidSpiderName(name); err != nil {
		return err
	}
	repoPath, err := req.RepoPath.untrimmed("repo_path")
	if err != nil {
		return err
	}
	if repoPath, err = scrapethis.ValidRepoPath(repoPath); err != nil {
		return err
	}
	sp, err := s.db.CreateSpider(r.Context(), userID(r.Context()), name, repoPath)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, toSpiderJSON(sp))
	return nil
}

func (s *Server) listSpiders(w http.ResponseWriter, r *http.Request) error {
	list, err := s.db.Spiders(r.Context(), userID(r.Context()))
	if err != nil {
		return err
	}
	out := make([]spiderJSON, len(list))
	for i, sp := range list {
		out[i] = toSpiderJSON(sp)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getSpider(w http.ResponseWriter, r *http.Request) error {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	sp, err := s.db.Spider(r.Context(), userID(r.Context()), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toSpiderJSON(sp))
	return nil
}

func (s *Server) deleteSpider(w http.ResponseWriter, r *http.Request) error {
	id := httprouter.ParamsFromContext(r.Context()).ByName("id")
	if err := s.db.DeleteSpider(r.Context(), userID(r.Context()), id); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "message": "Spider deleted"})
	return nil
}
