package platform

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// LogConfig configures logging.
type LogConfig struct {
	Level  string // debug, info, warn, error
	Format string // auto, json (Cloud Logging fields) or text
}

// RegisterFlags adds the logging flags to fs.
func (c *LogConfig) RegisterFlags(fs interface {
	StringVar(p *string, name, value, usage string)
}) {
	fs.StringVar(&c.Level, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.Format, "log-format", "auto", "log format: json (Cloud Logging field names), text (compact lines for people) or auto (text on a terminal, json elsewhere)")
}

// NewLogger returns a slog logger writing to w. The JSON form uses the field
// names Cloud Logging reads from structured logs: severity, message, time.
func NewLogger(w io.Writer, c LogConfig) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", c.Level)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: cloudLoggingAttr}
	format := strings.ToLower(c.Format)
	if format == "auto" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: compactAttr})), nil
	}
	return nil, fmt.Errorf("log format %q: want auto, json or text", c.Format)
}

// isTerminal is IsTerminal, the decision of --log-format auto; tests
// replace it.
var isTerminal = IsTerminal

// IsTerminal reports whether w is a terminal: a file whose descriptor
// answers the terminal ioctl, not a file, pipe, socket or another
// character device such as /dev/null.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// compactAttr shortens the text form for a person at a terminal: the time
// of day, no key for the time.
func compactAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		if t, ok := a.Value.Any().(time.Time); ok {
			return slog.String(slog.TimeKey, t.Format("15:04:05.000"))
		}
	}
	return a
}

func cloudLoggingAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.MessageKey:
		a.Key = "message"
	case slog.LevelKey:
		a.Key = "severity"
		if l, ok := a.Value.Any().(slog.Level); ok {
			a.Value = slog.StringValue(severity(l))
		}
	}
	return a
}

func severity(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARNING"
	}
	return "ERROR"
}

// Discard is a logger that drops everything, for tests.
var Discard = slog.New(slog.DiscardHandler)

type ctxKey struct{}

// WithLogger returns ctx carrying l.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, ctxKey{}, l)
}

// Logger returns the logger in ctx, or slog.Default().
func Logger(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(ctxKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}
