package envelope

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/klauspost/compress/s2"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/event"
)

// NewRecords is the message of one stored batch of records: NDJSON of
// event.Record (the record's JSON, as the read API serves it, Seq included),
// kind records, with their count, in version RecordsVersion.
func NewRecords(recs []event.Record) (*broker.Message, error) {
	if len(recs) == 0 {
		return nil, errors.New("envelope: a records message needs at least one record")
	}
	msgs, err := NewRecordsMessages(recs, math.MaxInt)
	if err != nil {
		return nil, err
	}
	return msgs[0], nil
}

// maxRecordsDecoded bounds the decompressed body of a version 2 records
// message, so that a forged message cannot make a consumer allocate
// without limit.
const maxRecordsDecoded = 64 << 20

// recordsMessage is a records message of the NDJSON body buf, compressed
// (version 2).
func recordsMessage(buf []byte, count int) *broker.Message {
	m := newMessage(KindRecords, s2.Encode(nil, buf), event.ContentTypeNDJSON, count, 0)
	m.Attributes[AttrVersion] = strconv.Itoa(RecordsVersion)
	return m
}

// MaxRecordsBytes is the largest body NewRecordsMessages puts in one
// message: well under JetStream's default message limit (8 MiB) and
// Pub/Sub's (10 MB).
const MaxRecordsBytes = 4 << 20

// NewRecordsMessages is the stored batch recs as records messages of at
// most maxBytes of uncompressed body each (MaxRecordsBytes if maxBytes <= 0); a record
// larger than that goes alone in its message. Each record is encoded once.
func NewRecordsMessages(recs []event.Record, maxBytes int) ([]*broker.Message, error) {
	return NewRecordsMessagesOf(recs, nil, maxBytes)
}

// NewRecordsMessagesOf is NewRecordsMessages for records some of which are
// encoded already: where lines[i] is not nil it is recs[i]'s JSON and a
// newline (store.LineWriter: as the store gave it back), sent as it is;
// the others are encoded. lines is nil or as long as recs.
func NewRecordsMessagesOf(recs []event.Record, lines [][]byte, maxBytes int) ([]*broker.Message, error) {
	if lines != nil && len(lines) != len(recs) {
		return nil, fmt.Errorf("envelope: %d lines for %d records", len(lines), len(recs))
	}
	if maxBytes <= 0 {
		maxBytes = MaxRecordsBytes
	}
	// The NDJSON body is only compressed, so its buffer (and the
	// encoder's) serve the next batch.
	w := recordsWriters.Get().(*recordsWriter)
	defer recordsWriters.Put(w)
	var (
		out   []*broker.Message
		buf   = w.buf[:0]
		count int
	)
	flush := func() {
		if count > 0 {
			out = append(out, recordsMessage(buf, count))
			buf, count = buf[:0], 0
		}
	}
	for i := range recs {
		var b []byte
		if lines != nil && lines[i] != nil {
			b = lines[i]
			if len(b) == 0 || b[len(b)-1] != '\n' {
				return nil, fmt.Errorf("envelope: the line of record %q does not end in a newline", recs[i].EventID)
			}
		} else {
			var err error
			if b, err = w.enc.Encode(&recs[i]); err != nil {
				return nil, fmt.Errorf("envelope: encode record %q: %w", recs[i].EventID, err)
			}
		}
		if count > 0 && len(buf)+len(b) > maxBytes {
			flush()
		}
		buf = append(buf, b...)
		count++
	}
	flush()
	if cap(buf) <= MaxRecordsBytes*2 {
		w.buf = buf[:0]
	}
	return out, nil
}

// recordsWriter is NewRecordsMessages' reusable buffers.
type recordsWriter struct {
	enc *event.LineEncoder
	buf []byte
}

var recordsWriters = sync.Pool{New: func() any { return &recordsWriter{enc: event.NewLineEncoder()} }}

// DecodeRecords decodes a records message. It refuses a message of another
// kind, of an unknown version, or whose body is not exactly count records.
func DecodeRecords(m *broker.Message) ([]event.Record, error) {
	v, err := version(m, KindRecords)
	if err != nil {
		return nil, err
	}
	switch v {
	case 1:
		return decodeRecordsV1(m, m.Data)
	case 2:
		n, err := s2.DecodedLen(m.Data)
		if err != nil {
			return nil, fmt.Errorf("records message: not S2: %w", err)
		}
		if n > maxRecordsDecoded {
			return nil, fmt.Errorf("records message of %d bytes decompressed, over the limit of %d", n, maxRecordsDecoded)
		}
		body, err := s2.Decode(make([]byte, n), m.Data)
		if err != nil {
			return nil, fmt.Errorf("records message: not S2: %w", err)
		}
		return decodeRecordsV1(m, body)
	}
	return nil, unknownVersion(KindRecords, m.Attributes[AttrVersion])
}

// decodeRecordsV1 decodes body, NDJSON of records (version 1 as it is,
// version 2 once decompressed), against m's attributes.
func decodeRecordsV1(m *broker.Message, body []byte) ([]event.Record, error) {
	if ct := m.Attributes[AttrContentType]; ct != event.ContentTypeNDJSON {
		return nil, fmt.Errorf("records message of content type %q, want %s", ct, event.ContentTypeNDJSON)
	}
	count, err := strconv.Atoi(m.Attributes[AttrCount])
	if err != nil || count < 1 {
		return nil, fmt.Errorf("records message with count %q, want a positive integer", m.Attributes[AttrCount])
	}
	recs := make([]event.Record, 0, min(count, len(body)/2+1))
	for line := range bytes.Lines(body) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if len(recs) == count {
			return nil, fmt.Errorf("records message holds more than its count of %d records", count)
		}
		i := len(recs)
		if line[0] != '{' {
			return nil, fmt.Errorf("record %d: not a JSON object", i)
		}
		recs = append(recs, event.Record{})
		if err := event.Unmarshal(line, &recs[i]); err != nil {
			return nil, fmt.Errorf("record %d: %w", i, err)
		}
	}
	if len(recs) != count {
		return nil, fmt.Errorf("records message holds %d records, its count says %d", len(recs), count)
	}
	return recs, nil
}
