package deadletter

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/skyjoin/skyjoin/internal/broker"
	"github.com/skyjoin/skyjoin/internal/envelope"
)

// Erased says what EraseUser did.
type Erased struct {
	Deleted   int `json:"deleted"`   // dead letters that held only the user's events
	Rewritten int `json:"rewritten"` // dead letters of several events, published again without the user's
	Events    int `json:"events"`    // the user's events removed
}

// EraseUser removes a user's events from the dead letters (erasure). Dead
// letters hold events as sent, so userID is the id as the user's events
// carry it, never hashed. A dead letter whose events are all the user's is
// deleted; one that also holds other users' events (a whole message that
// failed) is published again without the user's, as NDJSON, then deleted.
// A dead letter that does not decode into events (an unknown envelope
// version, a body that is not JSON) is deleted if its bytes hold the id as
// a JSON string: the erasure errs on the side of the person. An event
// without a readable user.id is matched the same way.
func EraseUser(ctx context.Context, b Broker, userID string) (Erased, error) {
	var out Erased
	needle := jsonString(userID)
	var found []*broker.Message
	err := b.Browse(ctx, broker.TopicDeadLetter, func(m *broker.Message) bool {
		if bytes.Contains(m.Data, needle) || bytes.Contains(m.Data, []byte(userID)) {
			found = append(found, m) // a cheap filter; decoded below
		}
		return true
	})
	if err != nil {
		return out, fmt.Errorf("erase user from dead letters: %w", err)
	}
	for _, m := range found {
		keep, removed := splitEvents(m, userID, needle)
		if removed == 0 {
			continue
		}
		if len(keep) > 0 {
			var body []byte
			for _, raw := range keep {
				var line bytes.Buffer
				if err := json.Compact(&line, raw); err != nil {
					line.Reset()
					line.Write(raw) // decoded from JSON: does not happen
				}
				body = append(append(body, line.Bytes()...), '\n')
			}
			if err := b.Publish(ctx, broker.TopicDeadLetter, envelope.DeadLetterWithEvents(m, body, len(keep))); err != nil {
				return out, fmt.Errorf("erase user from dead letter %s: publish the rest of it: %w", m.ID, err)
			}
			out.Rewritten++
		} else {
			out.Deleted++
		}
		if err := b.Delete(ctx, broker.TopicDeadLetter, m.ID); err != nil {
			return out, fmt.Errorf("erase user from dead letter %s: %w", m.ID, err)
		}
		out.Events += removed
	}
	return out, nil
}

// splitEvents returns the raw events of a dead letter that are not the
// user's, and how many are. A dead letter that does not decode is one
// event: the user's if its bytes hold the id as a JSON string.
func splitEvents(m *broker.Message, userID string, needle []byte) (keep [][]byte, removed int) {
	in, err := envelope.DecodeEvents(m)
	if err != nil || len(in.Events) == 0 {
		if bytes.Contains(m.Data, needle) {
			return nil, 1
		}
		return nil, 0
	}
	for _, d := range in.Events {
		mine := d.Event.User.ID == userID
		if d.Event.User.ID == "" {
			mine = bytes.Contains(d.Raw, needle)
		}
		if mine {
			removed++
		} else {
			keep = append(keep, d.Raw)
		}
	}
	return keep, removed
}

// jsonString is s as a JSON string, as a sender writes it (no HTML
// escaping).
func jsonString(s string) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(s)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}
