package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/auth"
	"github.com/skyjoin/skyjoin/internal/event"
	"github.com/skyjoin/skyjoin/internal/live"
	"github.com/skyjoin/skyjoin/internal/platform"
	"github.com/skyjoin/skyjoin/internal/store"
)

// Defaults of the live stream's Options.
const (
	DefaultHeartbeat          = 15 * time.Second
	DefaultStreamWriteTimeout = time.Minute
)

// replayPage is the page size of a resume's replay from the store.
const replayPage = store.MaxLimit

// maxResubscribe bounds how often a resuming client that falls behind the
// live records while it replays may start over (each round makes
// progress: it resumes where the last one stopped).
const maxResubscribe = 3

// credentialRecheck is how often an open stream asks again whether its
// credential is accepted (auth.Recheck).
const credentialRecheck = time.Second

// DroppedEvent is the data of the final `event: dropped` of a stream: the
// client fell behind, the credential is no longer accepted (revoked or
// expired key, invalid session, expired ID token), or the stream reached
// its maximum lifetime.
type DroppedEvent struct {
	Reason string `json:"reason"`
	// LastEventID is the seq of the last record sent: reconnect with it
	// in Last-Event-ID (or after=) to continue without a gap.
	LastEventID int64 `json:"last_event_id"`
}

// GapEvent is the data of an `event: gap`, sent before the replay of a
// resume older than the resume window: the records stored after
// RequestedAfter and up to ResumesAfter are not replayed. The event's id
// is ResumesAfter, so that a reconnection resumes from there.
type GapEvent struct {
	Reason         string `json:"reason"`
	RequestedAfter int64  `json:"requested_after"`
	ResumesAfter   int64  `json:"resumes_after"`
}

// streamEnd is why a stream ends before its client goes: the stream
// sends it as the reason of its final `event: dropped`.
type streamEnd struct{ reason string }

func (e *streamEnd) Error() string { return e.reason }

// stream answers GET /v1/stream: Server-Sent Events of stored records.
//
// Each record is an event with `id: <seq>`, `event: record` and
// `data: <record JSON>`. A client resumes with the Last-Event-ID header (as
// EventSource does on reconnect) or ?after=<seq>; the header wins. A resume
// first replays from the store every matching record with a greater seq, in
// seq order, then goes live: the stream subscribes to the hub before it
// replays and skips live records up to the last replayed seq, so there is
// no gap and no duplicate. The replay reaches back over the newest
// resumeWindow stored records at most: an older resume point gets an
// `event: gap` and replays from the window's start. Without a resume point
// the stream starts with the records stored after the connection. Comment
// lines keep idle connections open. A client that falls behind by more
// than the hub's buffer gets a final `event: dropped` and is disconnected;
// it never slows the pipeline. So does a stream whose credential is no
// longer accepted (auth.Recheck, every credentialRecheck) or that reached
// maxLifetime. The stream ends without an event when the server drains.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		platform.WriteError(w, http.StatusBadRequest, "query string: must be URL-encoded key=value pairs joined by '&'", nil)
		return
	}
	p, perrs := parseParams(values, streamParams)
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(id), 10, 64)
		if err != nil || n < 0 {
			perrs = append(perrs, ParamError{Field: "Last-Event-ID", Message: "header must be the id of an event of this stream (a record seq, an integer >= 0), got " + quoteValue(id)})
		} else {
			p.after, p.hasAfter = n, true
		}
	}
	if len(perrs) > 0 {
		writeParamErrors(w, perrs)
		return
	}
	if h.hub == nil {
		platform.WriteError(w, http.StatusNotImplemented, "the live stream is not available on this server", nil)
		return
	}
	if h.Draining() {
		platform.WriteUnavailable(w, time.Second, "draining: shutting down")
		return
	}
	filter := p.q
	filter.Limit = 0
	sub, err := h.hub.Subscribe(filter.Match)
	if err != nil {
		platform.WriteUnavailable(w, time.Second, "the live stream is closed: shutting down")
		return
	}
	defer func() { sub.Close() }()
	// ctx ends with the request or when the server drains.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	drain := h.drainSignal()
	go func() {
		select {
		case <-drain:
			cancel()
		case <-ctx.Done():
		}
	}()

	s := &sseWriter{w: w, rc: http.NewResponseController(w), timeout: h.streamWriteTO, sent: newRecentSet(recentIDs)}
	// The server's read timeout would cancel a long stream's context.
	if err := s.rc.SetReadDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		h.log.LogAttrs(r.Context(), slog.LevelDebug, "stream: clear read deadline", slog.Any("error", err))
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no") // proxies: do not buffer
	w.WriteHeader(http.StatusOK)
	s.printf("retry: 2000\n\n")
	if err := s.flush(); err != nil {
		return
	}

	end := func(reason string, last int64) {
		b, _ := json.Marshal(DroppedEvent{Reason: reason, LastEventID: last})
		s.printf("event: dropped\ndata: %s\n\n", b)
		s.flush()
		h.log.LogAttrs(ctx, slog.LevelInfo, "stream client dropped", slog.String("reason", reason), slog.Int64("last_event_id", last))
	}

	// The stream lasts while its credential is accepted, and at most
	// maxLifetime. over says why it must end ("" while it need not);
	// the credential is asked again at most every credentialRecheck
	// unless force.
	began, checked := time.Now(), time.Now()
	over := func(force bool) string {
		now := time.Now()
		if h.maxLifetime > 0 && now.Sub(began) >= h.maxLifetime {
			return fmt.Sprintf("the stream reached its maximum lifetime (%s): reconnect with last_event_id", h.maxLifetime)
		}
		if !force && now.Sub(checked) < credentialRecheck {
			return ""
		}
		checked = now
		if err := auth.Recheck(r.Context()); err != nil {
			return "the credential is no longer accepted: " + err.Error()
		}
		return ""
	}

	// last is the highest seq sent: the id a client resumes from. Live
	// records come from the records topic, where a batch may come again
	// (a worker redelivered it after a crash) and, with several workers on
	// BigQuery, out of seq order: a live record is skipped if the replay
	// from the store covered it (seq up to the replay's end) or if it was
	// sent already (its event id among the last recentIDs sent).
	last, replayed := int64(-1), int64(-1)
	if p.hasAfter {
		last = p.after
		start, err := h.resumeStart(ctx, last)
		if err != nil {
			if ctx.Err() == nil {
				h.log.LogAttrs(ctx, slog.LevelError, "stream: replay failed", slog.Any("error", err))
				end("could not read the stored records to resume; reconnect to try again", last)
			}
			return
		}
		if start > last {
			b, _ := json.Marshal(GapEvent{
				Reason:         fmt.Sprintf("the resume point is older than the newest %d stored records, the most a resume replays: the records stored before those are skipped", h.resumeWindow),
				RequestedAfter: last, ResumesAfter: start,
			})
			s.printf("id: %d\nevent: gap\ndata: %s\n\n", start, b)
			last = start
		}
		for round := 0; ; round++ {
			var err error
			if last, err = h.replay(ctx, s, filter, last, over); err != nil {
				var stop *streamEnd
				if errors.As(err, &stop) {
					end(stop.reason, last)
					return
				}
				if ctx.Err() == nil && s.err == nil {
					h.log.LogAttrs(ctx, slog.LevelError, "stream: replay failed", slog.Any("error", err))
					end("could not read the stored records to resume; reconnect to try again", last)
				}
				return
			}
			replayed = last
			if sub.Dropped() == "" {
				break
			}
			// The live records overflowed the buffer while the stream
			// replayed; the store has them: subscribe again and replay on.
			if sub.Dropped() == live.ReasonClosed || round == maxResubscribe {
				end(sub.Dropped(), last)
				return
			}
			if sub, err = h.hub.Subscribe(filter.Match); err != nil {
				return
			}
		}
	}

	heartbeat := time.NewTicker(h.heartbeat)
	defer heartbeat.Stop()
	recheck := time.NewTicker(credentialRecheck)
	defer recheck.Stop()
	var lifetime <-chan time.Time
	if h.maxLifetime > 0 {
		t := time.NewTimer(max(h.maxLifetime-time.Since(began), 0))
		defer t.Stop()
		lifetime = t.C
	}
	for {
		select {
		case rec, ok := <-sub.C:
			if !ok {
				if reason := sub.Dropped(); reason != live.ReasonClosed {
					end(reason, last)
				}
				return
			}
			// Send what is buffered, then flush once.
			for {
				if rec.Seq > replayed && !s.sent.has(rec.EventID) {
					s.record(rec)
					last = max(last, rec.Seq)
				}
				if s.err != nil || len(sub.C) == 0 {
					break
				}
				if rec, ok = <-sub.C; !ok {
					break
				}
			}
			if s.flush() != nil {
				return
			}
		case <-heartbeat.C:
			s.printf(": heartbeat\n\n")
			if s.flush() != nil {
				return
			}
		case <-recheck.C:
			if reason := over(true); reason != "" {
				end(reason, last)
				return
			}
		case <-lifetime:
			end(over(false), last)
			return
		case <-ctx.Done():
			return
		}
	}
}

// resumeStart returns where a resume after seq `after` replays from:
// after itself, or, when more than h.resumeWindow records were stored
// since, the seq below the newest h.resumeWindow of them. The window
// counts every stored record, whatever the stream's filters: a filter
// (until=, user_id=) cannot reach further back than the window.
func (h *Handler) resumeStart(ctx context.Context, after int64) (int64, error) {
	if h.resumeWindow <= 0 {
		return after, nil
	}
	// Newest first, up to the window and one more record: that one's
	// seq is the window's start.
	q := store.Query{AfterSeq: after}
	left := h.resumeWindow + 1
	for {
		q.Limit = min(left, store.MaxLimit)
		rctx, cancel := context.WithTimeout(ctx, h.timeout)
		page, err := h.reader.List(rctx, q)
		cancel()
		if err != nil {
			return after, fmt.Errorf("resume window after seq %d: %w", after, err)
		}
		left -= len(page.Records)
		switch {
		case left <= 0:
			return max(page.Records[len(page.Records)-1].Seq, after), nil
		case page.NextCursor == "" || len(page.Records) == 0:
			return after, nil
		}
		q.Cursor = page.NextCursor
	}
}

// replay sends the stored records matching filter with seq > after, page
// by page in seq order, and returns the last seq sent (after if none).
// Between pages it asks over whether the stream must end; if so it
// returns a *streamEnd.
func (h *Handler) replay(ctx context.Context, s *sseWriter, filter store.Query, after int64, over func(force bool) string) (int64, error) {
	q := filter
	q.Ascending, q.Limit = true, replayPage
	for {
		q.AfterSeq = after
		rctx, cancel := context.WithTimeout(ctx, h.timeout)
		page, err := h.reader.List(rctx, q)
		cancel()
		if err != nil {
			return after, fmt.Errorf("replay after seq %d: %w", after, err)
		}
		for i := range page.Records {
			s.record(&page.Records[i])
			after = page.Records[i].Seq
		}
		if err := s.flush(); err != nil {
			return after, fmt.Errorf("replay after seq %d: %w", after, err)
		}
		if page.NextCursor == "" {
			return after, nil
		}
		if reason := over(false); reason != "" {
			return after, &streamEnd{reason}
		}
	}
}

// sseWriter writes events, each write under a deadline so that a client
// that stopped reading cannot hold the handler forever. The first error
// sticks and makes later writes no-ops.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	err     error
	buf     []byte
	sent    *recentSet // event ids of the last records sent
}

func (s *sseWriter) deadline() {
	if err := s.rc.SetWriteDeadline(time.Now().Add(s.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		s.err = err
	}
}

func (s *sseWriter) printf(format string, args ...any) {
	if s.err != nil {
		return
	}
	s.deadline()
	if _, err := fmt.Fprintf(s.w, format, args...); err != nil {
		s.err = err
	}
}

func (s *sseWriter) record(r *event.Record) {
	if s.err != nil {
		return
	}
	s.sent.add(r.EventID)
	b, err := json.Marshal(r)
	if err != nil {
		s.err = fmt.Errorf("encode record %d: %w", r.Seq, err)
		return
	}
	s.buf = append(s.buf[:0], "id: "...)
	s.buf = strconv.AppendInt(s.buf, r.Seq, 10)
	s.buf = append(s.buf, "\nevent: record\ndata: "...)
	s.buf = append(s.buf, b...) // JSON has no raw newline
	s.buf = append(s.buf, "\n\n"...)
	s.deadline()
	if _, err := s.w.Write(s.buf); err != nil {
		s.err = err
	}
}

func (s *sseWriter) flush() error {
	if s.err != nil {
		return s.err
	}
	s.deadline()
	if err := s.rc.Flush(); err != nil {
		s.err = err
	}
	return s.err
}

// recentIDs is how many event ids a stream remembers to skip records that
// come again on the records topic.
const recentIDs = 4096

// recentSet remembers the last n strings added.
type recentSet struct {
	ring []string
	next int
	in   map[string]struct{}
}

func newRecentSet(n int) *recentSet {
	return &recentSet{ring: make([]string, n), in: make(map[string]struct{}, n)}
}

func (r *recentSet) has(id string) bool { _, ok := r.in[id]; return ok }

func (r *recentSet) add(id string) {
	if r.has(id) {
		return
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.in, old)
	}
	r.ring[r.next] = id
	r.in[id] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}
