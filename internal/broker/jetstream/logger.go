package jetstream

import (
	"fmt"
	"log/slog"
)

// serverLogger routes the embedded server's log to slog. The server's
// notices (its start-up banner) go to debug.
type serverLogger struct{ log *slog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.log.Debug(msg(format, v)) }
func (l serverLogger) Warnf(format string, v ...any)   { l.log.Warn(msg(format, v)) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.log.Error(msg(format, v)) }
func (l serverLogger) Errorf(format string, v ...any)  { l.log.Error(msg(format, v)) }
func (l serverLogger) Debugf(format string, v ...any)  { l.log.Debug(msg(format, v)) }
func (l serverLogger) Tracef(format string, v ...any)  { l.log.Debug(msg(format, v)) }

func msg(format string, v []any) string { return "nats-server: " + fmt.Sprintf(format, v...) }
