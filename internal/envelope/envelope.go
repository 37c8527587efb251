// Package envelope owns every message skyjoin puts on the broker: its
// attributes, media types, encoding and decoding. Producers and consumers
// import this package, never each other.
//
// Kinds of message:
//
//   - events (topic events): a body of events as a producer sent it, a JSON
//     object, a JSON array or NDJSON (content_type says which), from ingest,
//     collect or a replay. NewEvents, DecodeEvents.
//   - dead letters (topic deadletter): an event the worker could not process
//     (its JSON, as a one-event events message) or a whole message it could
//     not decode (as sent), with the original's attributes and the dl_*
//     attributes that say why. Its kind and version stay those of the data,
//     so a replay puts it back as it was. NewDeadLetter, ParseDeadLetter,
//     Replay.
//   - records: one stored batch of enriched records, NDJSON of event.Record
//     (with their Seq). NewRecords, DecodeRecords.
//
// Attributes (all strings):
//
//	attribute        kinds     value
//	envelope         all       envelope version; absent means 1
//	kind             all       events or records; absent means events
//	message_id       all       this message's id: 128 random bits, base32 (26 characters); absent from older producers
//	content_type     all       application/json or application/x-ndjson (events); application/x-ndjson (records)
//	count            all       number of events or records in the body
//	ingested_at      events    when ingest took the events, RFC 3339 with nanoseconds, UTC
//	source           events    ingest, collect or replay
//	replayed_from    events    the broker id of the dead letter a replay came from
//	dl_reason        dead      why the event could not be processed
//	dl_stage         dead      the stage that gave up: decode, validate, store, enrich
//	dl_attempts      dead      deliveries of the original message
//	dl_message_id    dead      the broker id of the original message
//	dl_index         dead      the event's index in the original message; -1 for the whole message
//	dl_failed_at     dead      when the worker gave up, RFC 3339 with nanoseconds, UTC
//	dl_subscription  dead      the subscription that gave up
//
// Every message built here carries its own message_id, also set as
// broker.Message.ID, so that the JetStream backend drops a duplicate publish
// of the same message (Nats-Msg-Id) and a Dataflow pipeline can use it as
// Pub/Sub's id attribute. It identifies the message, not its events: the
// store deduplicates by event_id.
//
// Versions: decoding dispatches on the kind and then on the envelope
// version, so that another encoding (a binary one, say) can be added as
// version 2 beside version 1: one case in DecodeEvents or DecodeRecords plus
// its codec. A version this build does not know is refused with
// ErrUnknownVersion, which the worker dead-letters with stage decode.
// Messages without envelope, kind and message_id attributes (written before
// this package) decode as version 1 events.
package envelope

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/event"
)

// Attributes of every kind.
const (
	AttrVersion     = "envelope"
	AttrKind        = "kind"
	AttrMessageID   = "message_id"
	AttrContentType = "content_type"
	AttrCount       = "count"
)

// Attributes of events messages.
const (
	AttrIngestedAt   = "ingested_at"
	AttrSource       = "source"
	AttrReplayedFrom = "replayed_from"
)

// Attributes a dead letter adds to the original's; they all start with
// DeadLetterPrefix.
const (
	DeadLetterPrefix  = "dl_"
	AttrReason        = "dl_reason"
	AttrStage         = "dl_stage"
	AttrAttempts      = "dl_attempts"
	AttrOriginalID    = "dl_message_id"
	AttrOriginalIndex = "dl_index"
	AttrFailedAt      = "dl_failed_at"
	AttrSubscription  = "dl_subscription"
	// AttrNoReplay, when set, says why the dead letter cannot be replayed:
	// its data is not an event the pipeline reads (a Segment message that
	// could not be mapped, kept as sent for inspection).
	AttrNoReplay = "dl_no_replay"
)

// Values of AttrSource.
const (
	SourceIngest  = "ingest"
	SourceCollect = "collect"
	SourceReplay  = "replay"
)

// Kind is what a message carries.
type Kind string

// Kinds.
const (
	KindEvents  Kind = "events"
	KindRecords Kind = "records"
)

// Version is the envelope version this package writes for events (and
// dead letters of a single event).
const Version = 1

// RecordsVersion is the version it writes for records: 2, NDJSON compressed
// with S2 (klauspost/compress). Version 1 (plain NDJSON) still decodes.
const RecordsVersion = 2

// ErrUnknownVersion is returned for a message of an envelope version this
// build cannot decode.
var ErrUnknownVersion = errors.New("unknown envelope version")

// newID returns a new message id: 128 random bits as 26 base32 characters
// (A-Z, 2-7), safe in URLs, NATS headers and Pub/Sub attributes.
func newID() string { return rand.Text() }

// newMessage returns a message of the given kind with a new id and room for
// more attributes.
func newMessage(kind Kind, data []byte, contentType string, count, extra int) *broker.Message {
	id := newID()
	attrs := make(map[string]string, 5+extra)
	attrs[AttrVersion] = strconv.Itoa(Version)
	attrs[AttrKind] = string(kind)
	attrs[AttrMessageID] = id
	attrs[AttrContentType] = contentType
	attrs[AttrCount] = strconv.Itoa(count)
	return &broker.Message{ID: id, Data: data, Attributes: attrs}
}

// version checks that m is of kind want and returns its envelope version.
func version(m *broker.Message, want Kind) (int, error) {
	kind := Kind(m.Attributes[AttrKind])
	if kind == "" {
		kind = KindEvents
	}
	if kind != want {
		return 0, fmt.Errorf("a message of kind %q, not %s", kind, want)
	}
	v := m.Attributes[AttrVersion]
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || strconv.Itoa(n) != v {
		return 0, unknownVersion(want, v)
	}
	return n, nil
}

func unknownVersion(kind Kind, v string) error {
	reads := "version 1"
	if kind == KindRecords {
		reads = "versions 1 and 2"
	}
	return fmt.Errorf("%w %q (kind %s): this build reads %s", ErrUnknownVersion, v, kind, reads)
}

// NewEvents is the message that carries events to the worker: body is a
// JSON object, a JSON array or NDJSON of events, as mediaType
// (event.ContentTypeJSON or event.ContentTypeNDJSON) says; count is the
// number of events in it; source is SourceIngest or SourceCollect. The body
// is not copied.
func NewEvents(body []byte, mediaType string, count int, ingestedAt time.Time, source string) *broker.Message {
	m := newMessage(KindEvents, body, mediaType, count, 2)
	m.Attributes[AttrIngestedAt] = ingestedAt.UTC().Format(time.RFC3339Nano)
	m.Attributes[AttrSource] = source
	return m
}

// Events is an events message, decoded.
type Events struct {
	ID        string // message_id; "" from older producers
	MediaType string // event.ContentTypeJSON or event.ContentTypeNDJSON
	// IngestedAt is when ingest took the events; the message's PublishedAt
	// when the attribute is missing or unreadable; zero if neither is known.
	IngestedAt time.Time
	Source     string
	// Events are the events of the body in order, each with its raw JSON
	// (aliasing the message's Data) and its decode errors, if any. They are
	// not validated.
	Events []event.Decoded
}

// DecodeEvents decodes an events message. It returns an error, the reason
// to dead-letter the message whole, for a message of another kind or of an
// unknown version, and for a body that cannot be split into events; an
// event that does not decode is reported in its Decoded.Errors instead.
func DecodeEvents(m *broker.Message) (Events, error) {
	v, err := version(m, KindEvents)
	if err != nil {
		return Events{}, err
	}
	switch v {
	case 1:
		return decodeEventsV1(m)
	}
	return Events{}, unknownVersion(KindEvents, m.Attributes[AttrVersion])
}

// decodeEventsV1: the body as the producer sent it, a JSON object, array or
// NDJSON as content_type says (absent means JSON).
func decodeEventsV1(m *broker.Message) (Events, error) {
	ct := m.Attributes[AttrContentType]
	mt := event.MediaType(ct)
	if mt == "" {
		return Events{}, fmt.Errorf("unknown content type %q", ct)
	}
	decoded, err := event.Decode(m.Data, mt, 0)
	if err != nil {
		return Events{}, err
	}
	ingestedAt, err := time.Parse(time.RFC3339Nano, m.Attributes[AttrIngestedAt])
	if err != nil {
		ingestedAt = m.PublishedAt
	}
	return Events{ID: m.Attributes[AttrMessageID], MediaType: mt, IngestedAt: ingestedAt,
		Source: m.Attributes[AttrSource], Events: decoded}, nil
}

// NewDeadLetter is the dead letter of the event at index of orig (data is
// the event's JSON as sent), or of the whole of orig when index is -1 (data
// is orig's body). It keeps orig's attributes and adds why (reason), where
// (stage, subscription) and when (failedAt) it failed and after how many
// deliveries. A single event is stored as a one-event JSON events message,
// so that it replays on its own. The dead letter gets its own message id.
func NewDeadLetter(orig *broker.Message, index int, data []byte, stage, reason, subscription string, failedAt time.Time) *broker.Message {
	id := newID()
	attrs := make(map[string]string, len(orig.Attributes)+8)
	for k, v := range orig.Attributes {
		attrs[k] = v
	}
	attrs[AttrMessageID] = id
	if index >= 0 {
		attrs[AttrVersion] = strconv.Itoa(Version)
		attrs[AttrKind] = string(KindEvents)
		attrs[AttrCount] = "1"
		// A JSON object, which both event media types read.
		attrs[AttrContentType] = event.ContentTypeJSON
	}
	attrs[AttrReason] = reason
	attrs[AttrStage] = stage
	attrs[AttrAttempts] = strconv.Itoa(max(orig.Deliveries, 1))
	attrs[AttrOriginalID] = orig.ID
	attrs[AttrOriginalIndex] = strconv.Itoa(index)
	attrs[AttrFailedAt] = failedAt.UTC().Format(time.RFC3339Nano)
	attrs[AttrSubscription] = subscription
	return &broker.Message{ID: id, Data: data, Attributes: attrs}
}

// DeadLetter is what a dead letter says about itself.
type DeadLetter struct {
	ID           string    // its own message_id; "" for older dead letters
	Stage        string    // the stage that gave up
	Reason       string    // why
	Attempts     int       // deliveries of the original message; 0 if unknown
	FailedAt     time.Time // zero if unknown
	OriginalID   string    // the broker id of the original message
	Index        int       // the event's index in the original; -1 for the whole message
	Subscription string    // the subscription that gave up
	ContentType  string    // of Data
	NoReplay     string    // why it cannot be replayed; "" if it can
	Data         []byte    // the event or message as sent (m.Data, not copied)
}

// ParseDeadLetter reads a dead letter's attributes. It never fails: a
// missing or unreadable attribute leaves its zero value (Index -1), so that
// every dead letter can be listed, whoever wrote it.
func ParseDeadLetter(m *broker.Message) DeadLetter {
	a := m.Attributes
	d := DeadLetter{
		ID:           a[AttrMessageID],
		Stage:        a[AttrStage],
		Reason:       a[AttrReason],
		OriginalID:   a[AttrOriginalID],
		Index:        -1,
		Subscription: a[AttrSubscription],
		ContentType:  a[AttrContentType],
		NoReplay:     a[AttrNoReplay],
		Data:         m.Data,
	}
	d.Attempts, _ = strconv.Atoi(a[AttrAttempts])
	if i, err := strconv.Atoi(a[AttrOriginalIndex]); err == nil {
		d.Index = i
	}
	d.FailedAt, _ = time.Parse(time.RFC3339Nano, a[AttrFailedAt])
	return d
}

// Replay is the message that replays a dead letter: its data and the
// original's attributes without the dl_* ones, with source replay,
// replayed_from the dead letter's broker id and a new message id.
func Replay(dead *broker.Message) *broker.Message {
	id := newID()
	attrs := make(map[string]string, len(dead.Attributes))
	for k, v := range dead.Attributes {
		if !strings.HasPrefix(k, DeadLetterPrefix) {
			attrs[k] = v
		}
	}
	attrs[AttrMessageID] = id
	attrs[AttrSource] = SourceReplay
	attrs[AttrReplayedFrom] = dead.ID
	return &broker.Message{ID: id, Data: dead.Data, Attributes: attrs}
}

// DeadLetterWithEvents is a dead letter with the events left of it after
// an erasure removed some: body is their NDJSON, count how many. It keeps
// every attribute of the original (why, where, when it failed) but the
// media type, the count and the message id, which is new.
func DeadLetterWithEvents(dead *broker.Message, body []byte, count int) *broker.Message {
	id := newID()
	attrs := make(map[string]string, len(dead.Attributes))
	for k, v := range dead.Attributes {
		attrs[k] = v
	}
	attrs[AttrMessageID] = id
	attrs[AttrContentType] = event.ContentTypeNDJSON
	attrs[AttrCount] = strconv.Itoa(count)
	return &broker.Message{ID: id, Data: body, Attributes: attrs}
}
