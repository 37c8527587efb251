package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/skyjoin/skyjoin/internal/registry"
)

// Erased says what EraseUsers did to the failure lists.
type Erased struct {
	Deleted   int `json:"deleted"`   // failed batches that held only the users' records
	Rewritten int `json:"rewritten"` // failed batches kept without them
	Records   int `json:"records"`   // the users' records removed
}

// EraseUsers removes the records of the users (their ids as stored, so
// hashed where the PII policy hashes user.id) from the failure list of
// every webhook, in the registry: a failed batch that held only theirs is
// deleted, any other is kept without them (same id, count and event ids
// updated). It works on the registry alone, so any process can run it. A
// replay of the same batch running at that moment in another process may
// store it back as it was: erasure is idempotent, run it again.
func EraseUsers(ctx context.Context, reg registry.Registry, userIDs []string) (Erased, error) {
	var out Erased
	docs, err := reg.List(ctx, collFailures, "")
	if err != nil {
		return out, errorf("erase users from the failure lists", err)
	}
	s := store{reg: reg}
	for _, d := range docs {
		f, err := decodeFailure(d)
		if err != nil {
			return out, errorf("erase users from the failure lists", err)
		}
		kept, removed, err := withoutUsers(f.records, userIDs)
		if err != nil {
			return out, errorf("erase users from failure "+f.ID, err)
		}
		if removed == 0 {
			continue
		}
		if len(kept) == 0 {
			if err := s.deleteFailure(ctx, f); err != nil {
				return out, err
			}
			out.Deleted++
		} else {
			var b bytes.Buffer
			b.WriteByte('[')
			for i, r := range kept {
				if i > 0 {
					b.WriteByte(',')
				}
				b.Write(r)
			}
			b.WriteByte(']')
			f.records = b.Bytes()
			f.Count = len(kept)
			f.EventIDs = f.EventIDs[:0]
			for _, r := range kept {
				var id struct {
					EventID string `json:"event_id"`
				}
				json.Unmarshal(r, &id)
				f.EventIDs = append(f.EventIDs, id.EventID)
			}
			if err := s.putFailure(ctx, f); err != nil {
				return out, err
			}
			out.Rewritten++
		}
		out.Records += removed
	}
	return out, nil
}

// withoutUsers splits a failure's JSON array of records into those of
// other users, as they are, and the number of the users'.
func withoutUsers(records []byte, userIDs []string) (kept []json.RawMessage, removed int, _ error) {
	var all []json.RawMessage
	if err := json.Unmarshal(records, &all); err != nil {
		return nil, 0, fmt.Errorf("decode records: %w", err)
	}
	for _, r := range all {
		var u struct {
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		}
		if err := json.Unmarshal(r, &u); err != nil {
			return nil, 0, fmt.Errorf("decode a record: %w", err)
		}
		if slices.Contains(userIDs, u.User.ID) {
			removed++
		} else {
			kept = append(kept, r)
		}
	}
	return kept, removed, nil
}
