package app

import (
	"fmt"
	"strings"

	"github.com/skyjoin/skyjoin/internal/auth"
)

// setupAuth decides whether this process checks credentials, and builds
// what checks them: API keys from the registry (watched), ID tokens, and
// browser sessions. Beyond loopback it refuses to start with nothing that
// could authenticate a caller (no active key in the registry, no ID
// tokens), unless --insecure-no-auth says so.
func (p *process) setupAuth() error {
	cfg := p.cfg.Auth
	adminAddr := p.cfg.AdminAddr
	if adminAddr == "off" {
		adminAddr = ""
	}
	on, err := cfg.Decide(p.cfg.Addr, adminAddr)
	if err != nil {
		return err
	}
	a := &auth.Authenticator{On: on}
	p.authn = a
	beyond := !auth.IsLoopback(p.cfg.Addr) || adminAddr != "" && !auth.IsLoopback(adminAddr)
	if !on {
		if beyond {
			p.log.Warn("INSECURE: auth is off (--insecure-no-auth) on a listener beyond loopback: anyone who reaches it can send, read, export and delete everything",
				"addr", p.cfg.Addr, "admin_addr", adminAddr)
		}
		return nil
	}
	idc := cfg.IDToken
	if !idc.Configured() && auth.OnCloudRun() && cfg.Mode == auth.ModeAuto {
		aud, err := auth.CloudRunAudience(p.ctx)
		if err != nil {
			return fmt.Errorf("auth: on Cloud Run, callers' ID tokens are checked against the service's URL; give it with --auth-idtoken-audience: %w", err)
		}
		idc.Audiences = []string{aud}
		p.cfg.Auth.IDToken.Audiences = idc.Audiences
	}
	if idc.Configured() {
		a.IDTokens = auth.NewIDTokens(idc, nil, p.log)
	}
	reg, err := p.optionalRegistry()
	if err != nil {
		return fmt.Errorf("auth: open the registry of the API keys: %w", err)
	}
	if reg != nil {
		v, err := auth.NewVerifier(p.ctx, reg, p.log)
		if err != nil {
			return fmt.Errorf("auth: %w", err)
		}
		p.closers.push("key verifier", v.Close)
		a.Keys = v
		if a.Sessions, err = auth.NewSessions(p.ctx, reg, cfg.SessionTTL); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	if a.IDTokens == nil && (a.Keys == nil || a.Keys.Active() == 0) {
		if beyond {
			return fmt.Errorf("auth: refusing to listen on %s beyond loopback with no way to authenticate a caller: "+
				"create a key first (skyjoin keys create --scope admin, against this registry), or accept ID tokens "+
				"(--auth-idtoken-audience), or serve everyone with --insecure-no-auth", p.listeners())
		}
		p.log.Warn("auth is on but no API key exists yet: every route but the probes and the dashboard's files answers 401; create one with `skyjoin keys create --scope admin`")
	}
	return nil
}

func (p *process) listeners() string {
	if p.cfg.AdminAddr == "off" {
		return p.cfg.Addr
	}
	return p.cfg.Addr + " and " + p.cfg.AdminAddr
}

// authSummary is the banner's auth line.
func (p *process) authSummary() string {
	a := p.authn
	switch {
	case !a.On && p.cfg.Auth.InsecureNoAuth && (!auth.IsLoopback(p.cfg.Addr) || !auth.IsLoopback(p.adminAddr) && p.adminAddr != ""):
		return "OFF (--insecure-no-auth): anyone who reaches the port can read and change everything"
	case !a.On:
		return "off (loopback only)"
	}
	var how []string
	if a.Keys != nil {
		how = append(how, fmt.Sprintf("API keys (%d active)", a.Keys.Active()))
	}
	if a.IDTokens != nil {
		how = append(how, "Google ID tokens for "+strings.Join(p.cfg.Auth.IDToken.Audiences, ", "))
	}
	if len(how) == 0 {
		how = append(how, "no key yet: create one with skyjoin keys create --scope admin")
	}
	return "on: " + strings.Join(how, "; ")
}
