package auth

import (
	"errors"
	"net/http"
	"time"

	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/registry"
)

// Handler serves the key routes (admin scope) and POST /v1/session.
//
//	POST   /v1/keys               create a key: {"name", "scopes", "expires_at"}; 201 with its token, shown once
//	GET    /v1/keys               list the keys (never a secret or hash)
//	POST   /v1/keys/{id}/rotate   a new secret: {"grace_seconds"} keeps the old one that long; 200 with the token
//	DELETE /v1/keys/{id}          revoke: every process refuses it within seconds
//	POST   /v1/session            a browser session of the key in Authorization (HttpOnly cookie)
type Handler struct {
	// Registry opens the registry of the keys (nil registry: this process
	// has none, and the key routes answer 501).
	Registry func() (registry.Registry, error)
	Auth     *Authenticator
}

// RegisterKeys mounts the key routes.
func (h *Handler) RegisterKeys(r platform.Router) {
	r.HandleFunc("POST /v1/keys", h.create)
	r.HandleFunc("GET /v1/keys", h.list)
	r.HandleFunc("POST /v1/keys/{id}/rotate", h.rotate)
	r.HandleFunc("DELETE /v1/keys/{id}", h.revoke)
}

// RegisterSession mounts POST /v1/session.
func (h *Handler) RegisterSession(r platform.Router) {
	r.HandleFunc("POST /v1/session", h.session)
}

// keyAnswer is a key with, once, its token.
type keyAnswer struct {
	Key
	Token string `json:"token,omitempty"`
}

func (h *Handler) keys(w http.ResponseWriter) (Keys, bool) {
	reg, err := h.Registry()
	if err == nil && reg == nil {
		err = errors.New("this process has no registry: API keys need --registry, or a JetStream broker")
	}
	if err != nil {
		platform.WriteError(w, http.StatusNotImplemented, err.Error(), nil)
		return Keys{}, false
	}
	return Keys{Reg: reg}, true
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	var spec KeySpec
	if !decodeBody(w, r, &spec, false) {
		return
	}
	ks, ok := h.keys(w)
	if !ok {
		return
	}
	k, tok, err := ks.Create(r.Context(), spec)
	if err != nil {
		writeKeyError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", "/v1/keys/"+k.ID)
	platform.WriteJSON(w, http.StatusCreated, keyAnswer{k, tok})
}

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	ks, ok := h.keys(w)
	if !ok {
		return
	}
	keys, err := ks.List(r.Context())
	if err != nil {
		writeKeyError(w, err)
		return
	}
	platform.WriteJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (h *Handler) rotate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		GraceSeconds int64 `json:"grace_seconds"`
	}
	if !decodeBody(w, r, &body, true) {
		return
	}
	ks, ok := h.keys(w)
	if !ok {
		return
	}
	k, tok, err := ks.Rotate(r.Context(), r.PathValue("id"), time.Duration(body.GraceSeconds)*time.Second)
	if err != nil {
		writeKeyError(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	platform.WriteJSON(w, http.StatusOK, keyAnswer{k, tok})
}

func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	ks, ok := h.keys(w)
	if !ok {
		return
	}
	k, err := ks.Revoke(r.Context(), r.PathValue("id"))
	if err != nil {
		writeKeyError(w, err)
		return
	}
	platform.WriteJSON(w, http.StatusOK, keyAnswer{Key: k})
}

func (h *Handler) session(w http.ResponseWriter, r *http.Request) {
	if !decodeBody(w, r, &struct{}{}, true) {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	p, _ := FromContext(r.Context())
	if !h.Auth.On {
		platform.WriteJSON(w, http.StatusOK, map[string]any{"auth": "off", "principal": p.ID})
		return
	}
	if p.Kind != KindKey || h.Auth.Sessions == nil {
		platform.WriteError(w, http.StatusBadRequest, "a session is made with an API key: send Authorization: Bearer sk_...", nil)
		return
	}
	scopes := sessionScopesOf(p)
	v, exp := h.Auth.Sessions.issue(p.ID, p.keyGen, scopes, h.Auth.Sessions.now())
	h.Auth.Sessions.setCookie(w, r, v, exp)
	platform.WriteJSON(w, http.StatusOK, map[string]any{"principal": p.ID, "scopes": scopes, "expires_at": exp.UTC()})
}

// maxBody bounds the body of the key routes.
const maxBody = 64 << 10

// decodeBody decodes a JSON object into v as every route of the API does
// (platform.DecodeJSON): names exact and case-sensitive, an unknown or
// duplicate name or invalid UTF-8 a 400 naming the field, nothing after
// the object; 413 past maxBody, 408 for a body that has not arrived within
// the server's read timeout. An empty body is allowed if optional. It
// answers 4xx itself and returns false on a bad body.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	if berr := platform.DecodeJSON(w, r, maxBody, v, optional); berr != nil {
		berr.Write(w)
		return false
	}
	return true
}

func writeKeyError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrKeyNotFound):
		platform.WriteError(w, http.StatusNotFound, err.Error(), nil)
	case errors.Is(err, ErrInvalidSpec):
		platform.WriteError(w, http.StatusBadRequest, err.Error(), nil)
	case errors.Is(err, registry.ErrInvalid):
		platform.WriteError(w, http.StatusBadRequest, err.Error(), nil)
	default:
		platform.WriteUnavailable(w, 5*time.Second, err.Error())
	}
}
