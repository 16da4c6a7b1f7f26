package api

import (
	"net/http"

	"github.com/julienschmidt/httprouter"

	"github.com/scrapethis/scrapethis"
)

type createSpiderRequest struct {
	Name       optional `json:"name"`
	RepoPath   optional `json:"repo_path"`
	MaxRunning optional `json:"max_running"`
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
	maxRunning, err := req.MaxRunning.maxRunning()
	if err != nil {
		return err
	}
	sp, err := s.db.CreateSpider(r.Context(), userID(r.Context()), name, repoPath, maxRunning)
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

type patchSpiderRequest struct {
	MaxRunning optional `json:"max_running"`
}

// updateSpider changes what PATCH may change of a spider: its max_running
// (null removes the cap). Raising or removing a cap lets held jobs go at
// once.
func (s *Server) updateSpider(w http.ResponseWriter, r *http.Request) error {
	var req patchSpiderRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	uid := userID(ctx)
	id := httprouter.ParamsFromContext(ctx).ByName("id")
	maxRunning, err := req.MaxRunning.maxRunning()
	if err != nil {
		return err
	}
	if !req.MaxRunning.set {
		sp, err := s.db.Spider(ctx, uid, id)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, toSpiderJSON(sp))
		return nil
	}
	sp, let, err := s.db.SetSpiderMaxRunning(ctx, uid, id, maxRunning)
	if err != nil && sp.ID == "" {
		return err
	}
	if err != nil {
		s.log.Warn("held jobs not let go; the reconciler will", "user_id", uid, "err", err)
	}
	s.enqueueLetGo(ctx, let)
	writeJSON(w, http.StatusOK, toSpiderJSON(sp))
	return nil
}
